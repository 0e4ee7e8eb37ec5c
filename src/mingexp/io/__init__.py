"""What mingexp reads and writes on disk, one module per format.

``tensors``: safetensors files (the only weights format mingexp reads): read with the file named in every
error, and loaded into a module exactly (every key placed, none left at its initial value).
"""
