"""Classes of an app (``@app.cls``): marks, parameters, handles, and the container's lifecycle."""
