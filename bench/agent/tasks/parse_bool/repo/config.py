def parse_bool(text):
    if text in ('true', 'yes', '1'):
        return True
    if text in ('false', 'no', '0'):
        return False
    raise ValueError(text)
