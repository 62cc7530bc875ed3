"""What runs a request's work, bounded: the batcher, inference front door and strip workers."""
