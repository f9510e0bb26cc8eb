"""The way to Temporal: settings, the connection, the embedded dev server and the SDK's loop."""
