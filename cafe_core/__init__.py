"""CAFE workbench core library.

A customization assistant for text-to-image generation (CAFE) and the small
library that backs the workbench notebooks. Import submodules directly; this
package import stays light so notebooks and the CLI start fast.
"""

__version__ = "0.1.0"
