"""Values in transit: pickled envelopes, the blob store and checkpoints."""
