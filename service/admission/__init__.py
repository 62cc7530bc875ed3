"""What every request passes before a route: the in-flight guard and request bookkeeping."""
