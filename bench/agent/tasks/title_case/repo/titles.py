SMALL = {'a', 'an', 'and', 'of', 'the'}


def title_case(text):
    return ' '.join(word.capitalize() for word in text.split())
