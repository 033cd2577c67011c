"""BokehDepth for ComfyUI: monocular metric depth boosted by generated bokeh."""

# ComfyUI imports this folder as a package; a test runner may import the file on its own (no
# parent package), where the relative import cannot work and nothing needs registering.
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    # ComfyUI serves this folder under /extensions/<name>/: the node help pages (docs/<node id>.md)
    # and the small script that shows what save nodes wrote.
    WEB_DIRECTORY = "./web"

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
