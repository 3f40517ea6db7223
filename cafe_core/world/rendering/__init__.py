"""How the world draws a scene, split by what it draws: canvas, backgrounds, objects, faces, styles."""
