"""The napari plugin's widgets (Qt + magicgui); the compute lives in the library modules.

napari's manifest points at :class:`main_widget.TokenUnifyWidget`, which takes ``napari_viewer``.
"""
