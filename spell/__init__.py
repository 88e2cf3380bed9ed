"""spell-rl: SPELL self-play reinforcement learning for long-context language models.

Importing ``spell`` is cheap: no torch or transformers are imported here.
"""

__version__ = "0.1.0"
