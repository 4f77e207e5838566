"""Network definitions (Keras 3). Never imports `app`."""
