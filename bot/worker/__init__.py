"""The worker: model cache, fair batching, and the batch runner shared by both transports.

`python -m bot.worker` runs a worker process for the Redis Streams deployment; the embedded default
(`bot.dispatch.local`) runs the same runner on a thread inside the bot.
"""
