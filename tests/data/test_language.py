"""Language detection per row (lingua, offline) and the rows in an unexpected language."""

from __future__ import annotations

import pytest

from tuneloop.data.language import detect_languages, unexpected_language_rows

SENTENCES = {
    "en": [
        "The delivery arrived two days late and the box was damaged.",
        "Can you reset my password? I cannot log in since Monday.",
        "Our team meets every Thursday to review the quarterly numbers.",
    ],
    "fr": [
        "La livraison est arrivée avec deux jours de retard et le carton était abîmé.",
        "Pouvez-vous réinitialiser mon mot de passe, s'il vous plaît ?",
        "Notre équipe se réunit chaque jeudi pour faire le point sur les chiffres.",
    ],
    "de": [
        "Die Lieferung kam zwei Tage zu spät und der Karton war beschädigt.",
        "Können Sie bitte mein Passwort zurücksetzen? Ich komme nicht mehr rein.",
        "Unser Team trifft sich jeden Donnerstag, um die Quartalszahlen zu besprechen.",
    ],
    "es": [
        "El paquete llegó dos días tarde y la caja estaba dañada.",
        "¿Puede restablecer mi contraseña? No puedo entrar desde el lunes.",
        "Nuestro equipo se reúne todos los jueves para revisar las cifras del trimestre.",
    ],
    "it": [
        "La consegna è arrivata con due giorni di ritardo e la scatola era rovinata.",
        "Potete reimpostare la mia password? Non riesco ad accedere da lunedì.",
        "Il nostro gruppo si riunisce ogni giovedì per esaminare i numeri del trimestre.",
    ],
}


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_sentences_get_their_language(language):
    assert detect_languages(SENTENCES[language]) == [language] * len(SENTENCES[language])


def test_short_or_letterless_texts_are_undecided():
    assert detect_languages(["ok", "Merci !", "", "   ", "1234567890 1234567890 12"]) == [None] * 5
    assert detect_languages(["Danke schön"], min_chars=5) == ["de"]


def test_expected_language_wins_a_near_tie_only():
    ambiguous = "Hello there, general Kenobi"  # lingua scores Italian and English almost equally
    assert detect_languages([ambiguous], expected="en", min_chars=5) == ["en"]
    assert detect_languages([SENTENCES["fr"][0]], expected="en") == ["fr"]


def test_unexpected_language_rows_finds_the_non_english_rows():
    rows = [SENTENCES["en"][0], SENTENCES["fr"][1], SENTENCES["en"][1], SENTENCES["de"][2], "ok", SENTENCES["it"][0]]
    assert unexpected_language_rows(rows) == [(1, "fr"), (3, "de"), (5, "it")]


def test_unexpected_language_rows_with_another_expected_language():
    rows = SENTENCES["fr"] + [SENTENCES["en"][2]]
    assert unexpected_language_rows(rows, expected="fr") == [(3, "en")]


def test_unknown_expected_language_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        detect_languages([SENTENCES["en"][0]], expected="xx")
