"""The Discord front end. Its modules are layers, each importing only the ones below it:

- `errors`, `embeds`, `attachments`, `options`: the pieces every other part uses;
- `views`: the persistent buttons, menus and modals, which reach the actions through the bot object;
- `actions/`: what commands and buttons do (styles, previews, encode, imagine, progress, delivery, restarts);
- `cogs/`: the slash commands, one cog per feature;
- `app`: the client, which loads the cogs, registers the views and owns the actions.
"""
