def chunks(items, size):
    for start in range(0, len(items) - size + 1, size):
        yield items[start : start + size]
