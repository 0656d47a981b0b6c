"""What the commands and the buttons do, one job a module, so a button behaves exactly like its command.

The bot object owns the two that buttons reach (`bot.styles`, `bot.generations`); the rest are helpers:

- `styles`: resolve a style (a code, `name`, `name@rev`, a mix), save, show and browse styles;
- `previews`: render a saved revision's preview grid and attach it;
- `encode`: download and encode an attached picture;
- `imagine`: queue an /imagine, and its Reroll and Variations;
- `progress`: follow a queued job with throttled progress edits, then deliver its outcome;
- `delivery`: show an outcome whatever Discord does (channel fallback, retries, files too large);
- `restarts`: at start, resume or fail the jobs the previous process left behind.
"""
