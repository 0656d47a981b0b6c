import json
import re
import string

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stylecodes import codec
from stylecodes.codec import CodeError, StyleCode, parse_code
from stylecodes.versions import VERSIONS

levels_strategy = st.lists(st.integers(0, 63), min_size=20, max_size=20).map(tuple)


@pytest.fixture(scope="module")
def vectors(reference_dir):
    return json.loads((reference_dir / "codec_vectors.json").read_text())


def test_every_reference_vector_quantises_and_decodes_exactly(vectors):
    assert len(vectors["vectors"]) == 60
    for vector in vectors["vectors"]:
        code = codec.code_from_latent(vector["latent"], version=1)
        assert code.legacy == vector["legacy_code"]
        parsed = parse_code(vector["legacy_code"])
        assert parsed == code
        np.testing.assert_array_equal(parsed.latent(), np.asarray(vector["decoded"], dtype=np.float32))


def test_readme_example_converts_both_ways(vectors):
    example = vectors["readme_default_code"]
    code = parse_code(example["legacy_code"])
    assert code.canonical == "C_d_AAI_rQglIvUb1_fC1"
    assert parse_code("C_d_AAI_rQglIvUb1_fC1").legacy == example["legacy_code"]
    np.testing.assert_array_equal(code.latent(), np.asarray(example["decoded"], dtype=np.float32))


def test_standard_alphabet_symbols_are_accepted():
    assert parse_code("C/d/AAI/rQglIvUb1/fC1") == parse_code("C_d_AAI_rQglIvUb1_fC1")
    assert parse_code("++++++++++++++++++++0").levels == (62,) * 20


def test_surrounding_whitespace_and_backticks_are_ignored():
    assert parse_code("  `C_d_AAI_rQglIvUb1_fC1` ") == parse_code("C_d_AAI_rQglIvUb1_fC1")


@given(levels_strategy, st.sampled_from(sorted(VERSIONS)))
def test_canonical_round_trip(levels, version):
    code = StyleCode(levels, version)
    assert parse_code(code.canonical) == code
    assert len(code.canonical) == 21


@given(levels_strategy)
def test_legacy_round_trip_is_lossless(levels):
    code = StyleCode(levels, 1)
    assert len(code.legacy) == 27
    assert parse_code(code.legacy) == code
    assert parse_code(parse_code(code.legacy).canonical).legacy == code.legacy


def test_published_floor_drifts_on_requantisation():
    # A fact of the published float32 formula that mixing must work around (see mix_codes).
    drifted = [q for q in range(64) if codec.quantize(codec.dequantize([q] * 20))[0] != q]
    assert drifted == list(range(1, 16))


@given(levels_strategy, st.sampled_from(sorted(VERSIONS)))
def test_mixing_a_code_with_itself_is_identity(levels, version):
    code = StyleCode(levels, version)
    assert codec.mix(f"{code.canonical}::2 {code.canonical}::0.5") == code


@given(st.lists(st.floats(-3, 3, width=32), min_size=20, max_size=20))
def test_quantise_clips_into_range(latent):
    levels = codec.quantize(latent)
    assert all(0 <= level <= 63 for level in levels)


@given(st.text(max_size=40).filter(lambda s: len(s.strip().strip("`")) not in (21, 27)))
def test_wrong_length_is_rejected_with_the_length(text):
    with pytest.raises(CodeError) as err:
        parse_code(text)
    message = str(err.value)
    assert "empty" in message or "characters long" in message
    assert "C_d_AAI_rQglIvUb1_fC1" in message  # says what a valid code looks like


@given(
    levels_strategy,
    st.integers(0, 19),
    st.sampled_from([c for c in string.punctuation + "éß " if c not in "-_+/`"]),
)
def test_bad_symbol_is_reported_with_its_position(levels, index, bad):
    text = list(StyleCode(levels, 1).canonical)
    text[index] = bad
    if index == 0 and bad == " ":
        return  # leading whitespace is stripped, so this is a length error instead
    with pytest.raises(CodeError, match=re.escape(f"Character {index + 1} of the stylecode, `{bad}`")):
        parse_code("".join(text))


@pytest.mark.parametrize("last", ["x", "_", "-", "A"])
def test_non_digit_version_is_rejected(last):
    with pytest.raises(CodeError, match="version digit"):
        parse_code("C_d_AAI_rQglIvUb1_fC" + last)


@pytest.mark.parametrize("digit", "23456789")
def test_unknown_version_digit_is_rejected(digit):
    with pytest.raises(CodeError, match=f"`{digit}`, an unknown encoder version; known versions are 0, 1"):
        parse_code("C_d_AAI_rQglIvUb1_fC" + digit)


def test_legacy_code_with_out_of_range_byte_is_rejected():
    bad = codec.base64.b64encode(bytes([64] + [0] * 19)).decode().rstrip("=")
    with pytest.raises(CodeError, match="outside the 6-bit range"):
        parse_code(bad)


def test_legacy_code_with_stray_trailing_bits_is_rejected():
    with pytest.raises(CodeError, match="bits set beyond"):
        parse_code("Aj8dPwAACD8rECAlCC8UGzU/HwJ")


def test_legacy_form_only_for_version_one():
    with pytest.raises(CodeError, match="Only version-1"):
        _ = StyleCode((0,) * 20, 0).legacy


def test_mix_weighted_mean_requantised():
    a = StyleCode((0,) * 20, 1)
    b = StyleCode((63,) * 20, 1)
    mixed = codec.mix(f"{a.canonical}::1 {b.canonical}::3")
    assert mixed.levels == (47,) * 20  # nearest level to (0 * 1 + 63 * 3) / 4 = 47.25
    assert mixed.version == 1
    assert codec.mix(a.canonical) == a  # one term, default weight


def test_mix_accepts_legacy_and_canonical_together():
    legacy = "Aj8dPwAACD8rECAlCC8UGzU/HwI"
    assert codec.mix(f"{legacy}::2 C_d_AAI_rQglIvUb1_fC1::1") == parse_code(legacy)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("C_d_AAI_rQglIvUb1_fC1::x", "must be a number"),
        ("C_d_AAI_rQglIvUb1_fC1::-1", "positive"),
        ("C_d_AAI_rQglIvUb1_fC1::0", "positive"),
        ("C_d_AAI_rQglIvUb1_fC1 C_d_AAI_rQglIvUb1_fC0", "same encoder version"),
        ("C_d_AAI_rQglIvUb1_fC1 nope", "characters long"),
    ],
)
def test_bad_mixes_are_rejected(text, message):
    with pytest.raises(CodeError, match=message):
        codec.mix(text)


@pytest.mark.parametrize(
    ("levels", "version", "message"),
    [
        ((1.5,) + (0,) * 19, 1, r"levels must be integers in 0\.\.63, got 1\.5"),
        ((True,) + (0,) * 19, 1, r"levels must be integers in 0\.\.63, got True"),
        ((64,) + (0,) * 19, 1, r"levels must be integers in 0\.\.63, got 64"),
        ((-1,) + (0,) * 19, 1, r"got -1"),
        ((0,) * 19, 1, r"20 levels, got 19"),
        ("A" * 20, 1, r"20 levels, got str"),
        ((0,) * 20, 7, r"Unknown encoder version 7; known versions are 0, 1"),
        ((0,) * 20, 2, r"Unknown encoder version 2"),
        ((0,) * 20, "1", r"Unknown encoder version '1'"),
        ((0,) * 20, 1.0, r"Unknown encoder version 1\.0"),
    ],
)
def test_style_code_refuses_what_would_not_parse(levels, version, message):
    with pytest.raises(CodeError, match=message):
        StyleCode(levels, version)


def test_style_code_takes_numpy_integers_as_plain_ints():
    code = StyleCode(tuple(np.arange(20, dtype=np.int64)), np.int64(1))
    assert code == StyleCode(tuple(range(20)), 1) and hash(code) == hash(StyleCode(tuple(range(20)), 1))
    assert all(type(level) is int for level in code.levels) and type(code.version) is int


@given(st.one_of(st.integers(2, 9), st.integers(-5, -1), st.integers(10, 99)))
def test_random_code_of_an_unknown_version_is_refused(version):
    with pytest.raises(CodeError, match=f"Unknown encoder version {version}"):
        codec.random_code(version)


_MALFORMED_LENGTHS = st.sampled_from([codec.CANONICAL_LENGTH, codec.LEGACY_LENGTH])


@given(
    st.one_of(
        st.text(max_size=60),
        _MALFORMED_LENGTHS.flatmap(lambda n: st.text(min_size=n, max_size=n)),  # right length, any characters
        _MALFORMED_LENGTHS.flatmap(  # right length, almost the right alphabet
            lambda n: st.text(alphabet=codec.URLSAFE_ALPHABET + "+/=é 0123456789", min_size=n, max_size=n)
        ),
    )
)
def test_parsing_any_text_raises_only_code_error(text):
    for parse in (parse_code, codec.mix):
        try:
            result = parse(text)
        except CodeError:
            continue
        assert parse_code(result.canonical) == result  # whatever parses is a valid code


def test_random_code_is_valid_and_seeded():
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    a = codec.random_code(1, rng_a)
    assert a == codec.random_code(1, rng_b)
    assert a.version == 1
    assert parse_code(a.canonical) == a
    codes = {codec.random_code(0).canonical for _ in range(20)}
    assert len(codes) > 1
