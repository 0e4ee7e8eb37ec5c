"""The web demo: ``python -m mingexp.demo model=<export folder or run checkpoint>`` (Gradio).

``actions.py`` is what each request does (model calls, settings used, latency, bad input as messages);
``app.py`` is the page around it; ``__main__.py`` loads the model once and serves the page.
"""
