"""The HTTP routes, one router per concern: classify (/predict...), oip (/v2...), ops (health, models, metrics)."""
