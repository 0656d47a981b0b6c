"""Style lifecycle, references, permissions and every bad input, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from sqlalchemy import func, select

import registry
from registry import (
    InvalidCodeError,
    InvalidNameError,
    InvalidReferenceError,
    InvalidVisibilityError,
    LimitExceededError,
    NameTakenError,
    PermissionDeniedError,
    RevisionNotFoundError,
    StyleNotFoundError,
)
from registry.models import Favourite, Revision, Style, StyleTag, User
from stylecodes.codec import EXAMPLE_CODE, random_code

ALICE, BOB, CAROL = 1001, 1002, 1003
GUILD, OTHER_GUILD = 501, 502
CODE_B = random_code(1, np.random.default_rng(1)).canonical
CODE_C = random_code(0, np.random.default_rng(2)).canonical


async def make(session, name="neon-noir", *, owner=ALICE, code=EXAMPLE_CODE, guild=GUILD, **kwargs):
    return await registry.create_style(session, name=name, code=code, owner_id=owner, guild_id=guild, **kwargs)


async def count(session, model) -> int:
    return await session.scalar(select(func.count()).select_from(model))


async def test_create_and_resolve(session) -> None:
    revision = await make(session, "Neon-Noir", description="moody city lights", tags=["city", "Night"], note="v1")
    assert revision.number == 1 and revision.code == EXAMPLE_CODE and revision.version == 1
    assert revision.style.name == "neon-noir"  # stored lower-case
    assert revision.style.tag_list == ["city", "night"]
    assert bytes(revision.levels) == bytes(registry.styles.to_code(EXAMPLE_CODE).levels)
    for ref in ("neon-noir", "NEON-NOIR", "neon-noir@latest", "neon-noir@1"):
        resolved = await registry.resolve_reference(session, ref, user_id=BOB, guild_id=GUILD)
        assert resolved.id == revision.id and resolved.style.name == "neon-noir"


async def test_get_revision_by_id_loads_its_style(session) -> None:
    created = await make(session)
    second = await registry.add_revision(session, "neon-noir", code=CODE_B, user_id=ALICE)
    found = await registry.get_revision(session, second.id)
    assert (found.id, found.number, found.code, found.style.name) == (second.id, 2, CODE_B, "neon-noir")
    assert (await registry.get_revision(session, created.id)).number == 1
    assert await registry.get_revision(session, second.id + 1000) is None


async def test_legacy_code_is_stored_canonically(session) -> None:
    code = registry.styles.to_code(EXAMPLE_CODE)
    revision = await make(session, code=code.legacy)
    assert revision.code == EXAMPLE_CODE


async def test_revisions_are_numbered_and_immutable(session) -> None:
    first = await make(session)
    second = await registry.add_revision(session, "neon-noir", code=CODE_B, user_id=ALICE, note="brighter")
    third = await registry.add_revision(session, "neon-noir", code=CODE_C, user_id=ALICE)
    assert (first.number, second.number, third.number) == (1, 2, 3)
    latest = await registry.resolve_reference(session, "neon-noir", user_id=BOB, guild_id=None)
    assert latest.id == third.id and latest.style.version == 0  # the head's encoder version
    old = await registry.resolve_reference(session, "neon-noir@1", user_id=BOB, guild_id=None)
    assert old.code == EXAMPLE_CODE and old.id == first.id
    with pytest.raises(RevisionNotFoundError, match="revisions 1 to 3"):
        await registry.resolve_reference(session, "neon-noir@4", user_id=BOB, guild_id=None)
    listed = await registry.list_revisions(session, "neon-noir", user_id=BOB, guild_id=None)
    assert [r.number for r in listed] == [1, 2, 3]


async def test_concurrent_revisions_get_distinct_numbers(sessions) -> None:
    async with sessions() as session:
        await make(session)

    async def add(code):
        async with sessions() as session:
            return (await registry.add_revision(session, "neon-noir", code=code, user_id=ALICE)).number

    numbers = await asyncio.gather(*(add(code) for code in (CODE_B, CODE_C, EXAMPLE_CODE)))
    assert sorted(numbers) == [2, 3, 4]


async def test_only_the_owner_adds_revisions_or_edits(session) -> None:
    await make(session)
    with pytest.raises(PermissionDeniedError, match="Only the owner"):
        await registry.add_revision(session, "neon-noir", code=CODE_B, user_id=BOB)
    with pytest.raises(PermissionDeniedError, match="Only the owner"):
        await registry.edit_style(session, "neon-noir", user_id=BOB, description="mine now")
    with pytest.raises(PermissionDeniedError):
        await registry.delete_style(session, "neon-noir", user_id=BOB)
    assert await count(session, Revision) == 1
    style = await registry.get_style(session, "neon-noir", user_id=BOB, guild_id=None)
    assert style.description == "" and style.deleted_at is None


async def test_edit(session) -> None:
    await make(session, tags="a1 b2")
    style = await registry.edit_style(
        session, "neon-noir", user_id=ALICE, description="  new words ", tags="#Ink, wash", visibility="private"
    )
    assert (style.description, style.tags, style.visibility) == ("new words", "ink wash", "private")
    tags = await session.scalars(select(StyleTag.tag).where(StyleTag.style_id == style.id).order_by(StyleTag.tag))
    assert list(tags) == ["ink", "wash"]


async def test_fork_records_parent_and_copies_the_code(session) -> None:
    await make(session, description="original", tags=["city"])
    await registry.add_revision(session, "neon-noir", code=CODE_B, user_id=ALICE)
    fork = await registry.fork_style(session, "neon-noir@1", new_name="neon-fork", user_id=BOB, guild_id=GUILD)
    assert fork.style.owner_id == BOB and fork.number == 1 and fork.code == EXAMPLE_CODE
    assert fork.style.description == "original" and fork.style.tags == "city"
    assert fork.note == "forked from neon-noir@1"
    parent = await registry.get_style(session, "neon-noir", user_id=BOB, guild_id=None)
    assert fork.style.parent_id == parent.id
    # Bob owns the fork: he can revise it, Alice cannot.
    await registry.add_revision(session, "neon-fork", code=CODE_C, user_id=BOB)
    with pytest.raises(PermissionDeniedError):
        await registry.add_revision(session, "neon-fork", code=CODE_C, user_id=ALICE)


async def test_fork_never_widens_visibility_by_default(session) -> None:
    await make(session, "open-style")
    await make(session, "guild-style", visibility="guild")
    await make(session, "secret-style", visibility="private")

    async def fork(source, new_name, *, user, guild, **kwargs):
        revision = await registry.fork_style(session, source, new_name=new_name, user_id=user, guild_id=guild, **kwargs)
        return revision.style.visibility, revision.style.guild_id

    assert await fork("open-style", "open-fork", user=BOB, guild=None) == ("public", None)
    assert await fork("guild-style", "guild-fork", user=BOB, guild=GUILD) == ("guild", GUILD)
    assert await fork("secret-style", "secret-fork", user=ALICE, guild=GUILD) == ("private", GUILD)
    # The owner forks her guild style outside its server: no `guild` there, so private, never public.
    assert await fork("guild-style", "guild-fork-dm", user=ALICE, guild=None) == ("private", None)
    assert await fork("guild-style", "guild-fork-away", user=ALICE, guild=OTHER_GUILD) == ("private", OTHER_GUILD)
    # Wider only when asked for explicitly.
    assert await fork("guild-style", "guild-fork-open", user=BOB, guild=GUILD, visibility="public") == ("public", GUILD)
    assert await fork("open-style", "open-fork-narrow", user=BOB, guild=GUILD, visibility="guild") == ("guild", GUILD)
    with pytest.raises(PermissionDeniedError):  # Carol in another guild never sees the guild fork
        await registry.resolve_reference(session, "guild-fork", user_id=CAROL, guild_id=OTHER_GUILD)


async def test_fork_of_an_invisible_style_is_refused(session) -> None:
    await make(session, visibility="private")
    with pytest.raises(PermissionDeniedError, match="private"):
        await registry.fork_style(session, "neon-noir", new_name="stolen", user_id=BOB, guild_id=GUILD)
    assert await count(session, Style) == 1


async def test_soft_delete_and_restore(session) -> None:
    await make(session)
    await registry.delete_style(session, "neon-noir", user_id=ALICE)
    with pytest.raises(StyleNotFoundError, match="deleted"):
        await registry.resolve_reference(session, "neon-noir", user_id=BOB, guild_id=GUILD)
    with pytest.raises(StyleNotFoundError, match="Restore it"):
        await registry.resolve_reference(session, "neon-noir", user_id=ALICE, guild_id=GUILD)
    # The name stays taken while deleted, so a restore can never clash.
    with pytest.raises(NameTakenError):
        await make(session, owner=BOB)
    await registry.restore_style(session, "neon-noir", user_id=ALICE)
    assert (await registry.resolve_reference(session, "neon-noir", user_id=BOB, guild_id=GUILD)).number == 1
    # A moderator (the caller checked the role) may delete and restore someone else's style.
    await registry.delete_style(session, "neon-noir", user_id=CAROL, moderator=True)
    await registry.restore_style(session, "neon-noir", user_id=CAROL, moderator=True)
    assert (await registry.get_style(session, "neon-noir", user_id=BOB, guild_id=None)).deleted_at is None


async def test_visibility(session) -> None:
    await make(session, "open-style")
    await make(session, "guild-style", visibility="guild")
    await make(session, "secret-style", visibility="private")
    for name in ("open-style", "guild-style", "secret-style"):
        await registry.resolve_reference(session, name, user_id=ALICE, guild_id=None)  # the owner sees all
    await registry.resolve_reference(session, "guild-style", user_id=BOB, guild_id=GUILD)
    with pytest.raises(PermissionDeniedError, match="server where it was made"):
        await registry.resolve_reference(session, "guild-style", user_id=BOB, guild_id=OTHER_GUILD)
    with pytest.raises(PermissionDeniedError, match="private"):
        await registry.resolve_reference(session, "secret-style", user_id=BOB, guild_id=GUILD)
    with pytest.raises(InvalidVisibilityError, match="one of public, guild, private"):
        await make(session, "bad-vis", visibility="friends")
    with pytest.raises(InvalidVisibilityError, match="server"):
        await make(session, "dm-guild", visibility="guild", guild=None)


async def test_guild_moderators_can_hide(session) -> None:
    await make(session)
    await registry.hide_in_guild(session, "neon-noir", guild_id=GUILD, moderator_id=CAROL)
    with pytest.raises(PermissionDeniedError, match="moderators have hidden"):
        await registry.resolve_reference(session, "neon-noir", user_id=BOB, guild_id=GUILD)
    await registry.resolve_reference(session, "neon-noir", user_id=BOB, guild_id=OTHER_GUILD)  # only that guild
    # Moderation binds the owner too: in that guild Alice cannot use her style either...
    with pytest.raises(PermissionDeniedError, match=r"moderators have hidden `neon-noir` here\. You still own it"):
        await registry.resolve_reference(session, "neon-noir", user_id=ALICE, guild_id=GUILD)
    assert await registry.autocomplete_names(session, "neon", user_id=ALICE, guild_id=GUILD) == []
    # ...but she still manages it (the owner-only paths do not go through visibility), and uses it elsewhere.
    await registry.add_revision(session, "neon-noir", code=CODE_B, user_id=ALICE)
    await registry.edit_style(session, "neon-noir", user_id=ALICE, description="still mine")
    assert (await registry.resolve_reference(session, "neon-noir", user_id=ALICE, guild_id=None)).number == 2
    await registry.hide_in_guild(session, "neon-noir", guild_id=GUILD, moderator_id=CAROL)  # twice is fine
    await registry.hide_in_guild(session, "neon-noir", guild_id=GUILD, moderator_id=CAROL, hidden=False)
    await registry.resolve_reference(session, "neon-noir", user_id=BOB, guild_id=GUILD)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("ab", "has 2 characters"),
        ("a" * 33, "has 33 characters"),
        ("neon noir", "contains ' '"),
        ("néon", "contains 'é'"),
        ("under_score", "contains '_'"),
        ("-dash", "starts or ends with `-`"),
        ("dash-", "starts or ends with `-`"),
        ("latest", "reserved"),
        ("Random", "reserved"),
        ("12345", "only digits"),
        ("", "empty"),
        ("abcdefghijklmnopqrst1", "valid stylecode"),
    ],
)
async def test_invalid_names_are_refused(session, name: str, message: str) -> None:
    with pytest.raises(InvalidNameError, match=message):
        await make(session, name)
    assert await count(session, Style) == 0 and await count(session, User) == 0


async def test_taken_name_case_insensitively(session) -> None:
    await make(session, "neon-noir")
    with pytest.raises(NameTakenError, match="already taken"):
        await make(session, "NEON-noir", owner=BOB, code=CODE_B)
    assert await count(session, Style) == 1 and await count(session, Revision) == 1
    # The session is still usable after the refused insert.
    assert (await make(session, "neon-noir-2", owner=BOB)).style.name == "neon-noir-2"


async def test_concurrent_creation_exactly_one_wins(sessions) -> None:
    async def create(owner: int, code: str):
        async with sessions() as session:
            return await make(session, "race-me", owner=owner, code=code)

    results = await asyncio.gather(create(ALICE, EXAMPLE_CODE), create(BOB, CODE_B), return_exceptions=True)
    winners = [r for r in results if isinstance(r, Revision)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], NameTakenError), repr(losers[0])
    async with sessions() as session:
        assert await count(session, Style) == 1 and await count(session, Revision) == 1
        stored = await registry.resolve_reference(session, "race-me", user_id=CAROL, guild_id=None)
        assert stored.code == winners[0].code and stored.style.owner_id == winners[0].style.owner_id


async def test_limits(session) -> None:
    with pytest.raises(LimitExceededError, match="301 characters; the limit is 300"):
        await make(session, description="x" * 301)
    with pytest.raises(LimitExceededError, match="at most 8 tags, got 9"):
        await make(session, tags=[f"tag{i}" for i in range(9)])
    with pytest.raises(InvalidNameError, match="The tag `bad!` is not valid"):
        await make(session, tags=["ok", "bad!"])
    await make(session, description="x" * 300, tags=[f"tag{i}" for i in range(8)])  # exactly at the limits
    with pytest.raises(LimitExceededError):
        await registry.edit_style(session, "neon-noir", user_id=ALICE, description="y" * 301)
    style = await registry.get_style(session, "neon-noir", user_id=ALICE, guild_id=None)
    assert style.description == "x" * 300  # the refused edit changed nothing


@pytest.mark.parametrize("code", ["", "not-a-code", "C_d_AAI_rQglIvUb1_fC9", "C_d_AAI_rQglIvUb1_fC!1", "C_d_AAI"])
async def test_invalid_codes(session, code: str) -> None:
    with pytest.raises(InvalidCodeError, match=r"stylecode|version"):
        await make(session, code=code)
    assert await count(session, Style) == 0


async def test_invalid_code_for_revision_writes_nothing(session) -> None:
    await make(session)
    with pytest.raises(InvalidCodeError):
        await registry.add_revision(session, "neon-noir", code="garbage", user_id=ALICE)
    style = await registry.get_style(session, "neon-noir", user_id=ALICE, guild_id=None)
    assert style.head_number == 1 and await count(session, Revision) == 1


BAD_REFERENCES = [
    ("neon-noir@x", InvalidReferenceError, "is not a revision"),
    ("neon-noir@0", InvalidReferenceError, "is not a revision"),
    ("neon-noir@000", InvalidReferenceError, "is not a revision"),
    ("neon-noir@-1", InvalidReferenceError, "is not a revision"),
    ("neon-noir@1.5", InvalidReferenceError, "is not a revision"),
    ("neon-noir@²", InvalidReferenceError, "is not a revision"),  # str.isdigit() accepts it, int() does not
    ("neon-noir@٣", InvalidReferenceError, "is not a revision"),  # an Arabic-Indic 3: digits are ASCII only
    ("neon-noir@2147483648", InvalidReferenceError, "far beyond any revision"),  # 2**31: no 32-bit integer
    ("neon-noir@3000000000", InvalidReferenceError, "far beyond any revision"),
    ("neon-noir@99999999999999999999", InvalidReferenceError, "far beyond any revision"),
    ("neon-noir@" + "9" * 5000, InvalidReferenceError, "far beyond any revision"),  # past int()'s digit limit
    ("", InvalidReferenceError, "empty"),
    ("bad name", InvalidNameError, "contains ' '"),
]


@pytest.mark.parametrize(("ref", "error", "message"), BAD_REFERENCES)
def test_parse_bad_references(ref: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        registry.parse_reference(ref)


async def test_bad_references(session) -> None:
    await make(session)
    for ref, error, message in [
        *BAD_REFERENCES,
        ("neon-noir@2147483647", RevisionNotFoundError, "no revision 2147483647"),  # the largest: a plain miss
    ]:
        with pytest.raises(error, match=message):
            await registry.resolve_reference(session, ref, user_id=ALICE, guild_id=None)
        with pytest.raises(error, match=message):  # forks resolve their source the same way
            await registry.fork_style(session, ref, new_name="a-fork", user_id=BOB, guild_id=None)
    assert await count(session, Style) == 1


async def test_revision_numbers_may_have_leading_zeros(session) -> None:
    first = await make(session)
    assert (await registry.resolve_reference(session, "neon-noir@01", user_id=BOB, guild_id=None)).id == first.id


async def test_unknown_name_suggests_close_names(session) -> None:
    for name in ("watercolour", "watercolor-soft", "neon-noir", "ink-wash"):
        await make(session, name)
    await make(session, "watercolors", visibility="private", owner=CAROL)  # never suggested to others
    with pytest.raises(StyleNotFoundError) as caught:
        await registry.resolve_reference(session, "watercolr", user_id=BOB, guild_id=None)
    assert caught.value.suggestions[0] == "watercolour"
    assert "watercolors" not in caught.value.suggestions
    assert "Did you mean `watercolour`" in str(caught.value)
    with pytest.raises(StyleNotFoundError) as caught:
        await registry.resolve_reference(session, "xneon-noir", user_id=BOB, guild_id=None)  # extra first letter
    assert caught.value.suggestions == ["neon-noir"]
    with pytest.raises(StyleNotFoundError) as caught:
        await registry.resolve_reference(session, "zzzzzz", user_id=BOB, guild_id=None)
    assert caught.value.suggestions == []


async def test_find_by_code(session) -> None:
    await make(session, "first")
    await make(session, "second", code=CODE_B)
    await registry.add_revision(session, "second", code=EXAMPLE_CODE, user_id=ALICE)
    await make(session, "hidden-one", visibility="private", owner=CAROL)
    found = await registry.find_by_code(session, EXAMPLE_CODE, user_id=BOB, guild_id=None)
    assert [r.reference for r in found] == ["first@1", "second@2"]
    legacy = registry.styles.to_code(EXAMPLE_CODE).legacy
    assert [r.reference for r in await registry.find_by_code(session, legacy, user_id=BOB, guild_id=None)] == [
        "first@1",
        "second@2",
    ]
    with pytest.raises(InvalidCodeError):
        await registry.find_by_code(session, "nope", user_id=BOB, guild_id=None)


async def test_favourites(session) -> None:
    await make(session)
    assert await registry.toggle_favourite(session, "neon-noir", user_id=BOB, guild_id=None) is True
    assert await registry.toggle_favourite(session, "neon-noir", user_id=CAROL, guild_id=None) is True
    style = await registry.get_style(session, "neon-noir", user_id=BOB, guild_id=None)
    await session.refresh(style)
    assert style.favourite_count == 2
    assert await registry.toggle_favourite(session, "neon-noir", user_id=BOB, guild_id=None) is False
    await session.refresh(style)
    assert style.favourite_count == 1
    with pytest.raises(StyleNotFoundError):
        await registry.toggle_favourite(session, "no-such-style", user_id=BOB, guild_id=None)


async def test_users_and_previews(session) -> None:
    user = await registry.upsert_user(session, ALICE, display_name="Alice")
    assert user.display_name == "Alice"
    assert (await registry.upsert_user(session, ALICE, display_name="Alice B")).display_name == "Alice B"
    revision = await make(session)
    webp = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8
    await registry.set_revision_preview(session, revision.id, webp)
    assert await registry.get_revision_preview(session, revision.id) == webp
    with pytest.raises(registry.InvalidPreviewError, match="WebP"):
        await registry.set_revision_preview(session, revision.id, b"\x89PNG\r\n")
    with pytest.raises(RevisionNotFoundError):
        await registry.set_revision_preview(session, 999_999, webp)


async def test_one_visibility_rule_everywhere(session) -> None:
    """Every combination of visibility, ownership, asking context, moderation and deletion: resolve
    (and the reason it gives) agrees with every listing, and with the documented rule."""
    shared = "C_d_AAI_rQglIvUb1_fC1"
    styles = {}
    for visibility in ("public", "guild", "private"):
        for hidden in (False, True):
            for deleted in (False, True):
                name = f"{visibility}-{'hidden' if hidden else 'shown'}-{'gone' if deleted else 'live'}"
                await make(session, name, code=shared, visibility=visibility, description="matrix")
                if hidden:
                    await registry.hide_in_guild(session, name, guild_id=GUILD, moderator_id=CAROL)
                if deleted:
                    await registry.delete_style(session, name, user_id=ALICE)
                styles[name] = (visibility, hidden, deleted)

    def rule(visibility, hidden, deleted, *, user, guild) -> bool:  # docs/registry.md, "Visibility"
        audience = visibility == "public" or user == ALICE or (visibility == "guild" and guild == GUILD)
        return not deleted and audience and not (hidden and guild == GUILD)

    for user in (ALICE, BOB):
        for guild in (GUILD, OTHER_GUILD, None):
            expected = {name for name, facts in styles.items() if rule(*facts, user=user, guild=guild)}
            resolvable = set()
            for name, (visibility, hidden, deleted) in styles.items():
                try:
                    await registry.resolve_reference(session, name, user_id=user, guild_id=guild)
                except (StyleNotFoundError, PermissionDeniedError) as refusal:
                    # The reason given is the first part of the rule that fails.
                    if deleted:
                        reason = (StyleNotFoundError, "was deleted")
                    elif user != ALICE and visibility == "private":
                        reason = (PermissionDeniedError, "private style")
                    elif user != ALICE and visibility == "guild" and guild != GUILD:
                        reason = (PermissionDeniedError, "server where it was made")
                    else:
                        assert hidden and guild == GUILD, name
                        reason = (PermissionDeniedError, "moderators have hidden")
                    assert type(refusal) is reason[0] and reason[1] in str(refusal), (name, user, guild, refusal)
                else:
                    resolvable.add(name)
            context = dict(user_id=user, guild_id=guild)
            listed = {s.name for s in (await registry.browse(session, **context, limit=100)).items}
            completed = set(await registry.autocomplete_names(session, "", **context))
            searched = {s.name for s in await registry.search(session, "matrix", **context, limit=100)}
            by_code = {r.style.name for r in await registry.find_by_code(session, shared, **context, limit=100)}
            similar = {s.style.name for s in await registry.similar_styles(session, shared, **context, k=25)}
            assert resolvable == expected, (user, guild)
            for found in (listed, completed, searched, by_code, similar):
                assert found == expected, (user, guild)


async def test_racing_favourite_toggles_keep_the_counter_right(sessions) -> None:
    async with sessions() as session:
        await make(session)

    async def toggle(user: int) -> bool:
        async with sessions() as session:
            return await registry.toggle_favourite(session, "neon-noir", user_id=user, guild_id=None)

    async def stored() -> tuple[int, int]:
        async with sessions() as session:
            rows = await count(session, Favourite)
            return rows, await session.scalar(select(Style.favourite_count))

    for _ in range(5):  # the same user toggling twice at once: one adds, the other removes
        assert sorted(await asyncio.gather(toggle(BOB), toggle(BOB))) == [False, True]
        assert await stored() == (0, 0)
    users = range(2000, 2006)  # different users at once: every favourite counts
    assert await asyncio.gather(*(toggle(user) for user in users)) == [True] * len(users)
    assert await stored() == (len(users), len(users))


async def test_tags_and_text_of_the_wrong_type(session) -> None:
    assert (await make(session, "no-tags", tags=None)).style.tags == ""
    with pytest.raises(InvalidNameError, match="Tags are a list of words"):
        await make(session, tags=5)
    with pytest.raises(InvalidNameError, match="A tag must be text, got int"):
        await make(session, tags=["ok", 12])
    with pytest.raises(registry.InvalidTextError, match="description must be text"):
        await make(session, description=["not", "text"])
    with pytest.raises(registry.InvalidTextError, match="note must be text"):
        await make(session, note=7)
    with pytest.raises(InvalidNameError, match="must be text"):
        await registry.edit_style(session, "no-tags", user_id=ALICE, tags=[None])
    assert await count(session, Style) == 1


async def test_find_by_code_limits(session) -> None:
    await make(session)
    for limit in (-1, 0, 101, True, 2.0, "5"):
        with pytest.raises(LimitExceededError, match="`limit` must be a whole number from 1 to 100"):
            await registry.find_by_code(session, EXAMPLE_CODE, user_id=BOB, guild_id=None, limit=limit)
