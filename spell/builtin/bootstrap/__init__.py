"""The built-in tiny policy's one-time bootstrap (issue 5 deliverable 2; CLI ``spell init-default``).

``config`` (settings), ``worldqa`` (questions with known answers over the world's train sets), ``synthetic``
(copy / key-value / lookup token tasks), ``transcripts`` (role chats in the exact self-play format), ``train``
(seeded CPU SFT loop), ``eval`` (measurements), ``pipeline`` (the stages), ``report`` and ``cli``.
Importing this package is cheap; torch is imported by ``train``, ``eval`` and ``pipeline`` only.
"""
