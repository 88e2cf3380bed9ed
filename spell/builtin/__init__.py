"""The built-in toy: a verifiable document world, the tiny offline Qwen2 builders, the staged bootstrap that
builds the shipped tiny policy, and the defaults that wire them into ``spell train`` with no arguments.
"""
