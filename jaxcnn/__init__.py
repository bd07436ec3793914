"""jaxcnn."""
