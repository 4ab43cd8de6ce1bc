from collections import Counter


def word_freq(text):
    return dict(Counter(text.split()))
