def clamp(value, low, high):
    """Limit value to [low, high]."""
    return max(low, value)
