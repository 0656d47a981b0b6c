"""One cog per feature, loaded by `StylecodesBot.setup_hook` from `bot.frontend.app.EXTENSIONS`."""
