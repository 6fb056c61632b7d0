"""What the user receives: the SMS text and the TwiML of the voice call.

    sms_body("(HOOK)Your code is 123456", "123456")   # Okta's template, as rendered by Okta
    twiml("123456", "FR-fr")
    # <Response><Say language="fr-FR">Votre code de vérification est 1, 2, 3, 4, 5, 6.</Say>
    # <Pause length="1"/><Say language="fr-FR">Je répète, votre code est 1, 2, 3, 4, 5, 6.</Say></Response>

The code is said one character at a time, twice. The ``language`` comes from the user's locale when
we have the words for it and Twilio's ``<Say>`` speaks it; otherwise the call is in US English.
Every text is XML-escaped.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

SMS_MAX_LENGTH = 1600  # Twilio refuses longer bodies (21617)
DEFAULT_SMS = "Your verification code is {code}"

# language → (locale Twilio's <Say> accepts, first sentence, repeat sentence)
PHRASES: dict[str, tuple[str, str, str]] = {
    "en": ("en-US", "Your verification code is", "Again, your code is"),
    "es": ("es-ES", "Su código de verificación es", "Repito, su código es"),
    "fr": ("fr-FR", "Votre code de vérification est", "Je répète, votre code est"),
    "de": ("de-DE", "Ihr Bestätigungscode lautet", "Noch einmal, Ihr Code lautet"),
    "it": ("it-IT", "Il suo codice di verifica è", "Ripeto, il suo codice è"),
    "pt": ("pt-BR", "O seu código de verificação é", "Repetindo, o seu código é"),
    "nl": ("nl-NL", "Uw verificatiecode is", "Nogmaals, uw code is"),
}
# Regional variants <Say> speaks, beyond the defaults above.
SAY_LOCALES = frozenset(
    {"en-US", "en-GB", "en-AU", "en-CA", "en-IN", "es-ES", "es-MX", "fr-FR", "fr-CA", "de-DE", "it-IT"}
    | {"pt-BR", "pt-PT", "nl-NL"}
)


def sms_body(template: str | None, code: str) -> str:
    """Okta's rendered template when it carries the code and fits an SMS, else our default text."""
    if template and code in template and len(template) <= SMS_MAX_LENGTH:
        return template
    return DEFAULT_SMS.format(code=code)


def say_locale(locale: str | None) -> str:
    """The ``<Say language>`` for an Okta locale (``EN-US``, ``fr_CA``, ``de``); ``en-US`` if unsupported."""
    if not locale:
        return "en-US"
    parts = locale.replace("_", "-").split("-")
    language = parts[0].lower()
    if language not in PHRASES:
        return "en-US"
    if len(parts) > 1:
        candidate = f"{language}-{parts[1].upper()}"
        if candidate in SAY_LOCALES:
            return candidate
    return PHRASES[language][0]


def spoken(code: str) -> str:
    """``"123"`` → ``"1, 2, 3"``: one character at a time, so TTS never reads "one hundred twenty-three"."""
    return ", ".join(code)


def twiml(code: str, locale: str | None = None) -> str:
    """The TwiML that says ``code`` twice, with a pause, in the user's language where supported."""
    language = say_locale(locale)
    _, first, again = PHRASES[language.split("-")[0]]
    digits = escape(spoken(code))
    lang = quoteattr(language)
    return (
        f"<Response><Say language={lang}>{escape(first)} {digits}.</Say>"
        f'<Pause length="1"/><Say language={lang}>{escape(again)} {digits}.</Say></Response>'
    )
