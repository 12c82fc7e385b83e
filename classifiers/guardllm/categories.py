"""The shipped category maps: each guard model's own categories onto GB/T 45654-2025 Appendix A
risk codes (and a few custom ``X.`` codes where Appendix A has no home for a category).

A policy overrides any entry with ``categories: {NAME: CODE}``, or drops one with ``NAME: null``.
Custom codes with no rule of their own fall to the policy's ``default_rule`` (allow in the bundled
default), so a policy that wants them acted on gives them a rule.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LLAMA_GUARD", "LLAMA_GUARD_NAMES", "QWEN3GUARD", "SHIELDGEMMA", "ShieldPolicy"]

#: Llama Guard 3 and 4 (MLCommons hazard taxonomy, the same S1-S14 in both).
LLAMA_GUARD_NAMES = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}
LLAMA_GUARD = {
    "S1": "A.1.f",  # violent crimes: Appendix A's violence (A.1.f "violence, obscenity")
    "S2": "X.illegal_request",  # fraud, drugs, hacking...: the bundled model's code for illegal asks
    "S3": "A.1.f",  # sex trafficking, assault: violence and obscenity
    "S4": "A.1.f",  # child sexual abuse material: obscenity (A.1 blocks and reports by default)
    "S5": "A.4.c",  # defamation: others' reputation
    "S6": "X.specialized_advice",  # medical/legal/financial advice: not prohibited content in itself
    "S7": "A.4.e",  # private information of others: privacy (A.4.f is the PII patterns' code)
    "S8": "A.3.a",  # intellectual property infringement
    "S9": "A.1.d",  # chemical, biological, nuclear, explosive weapons: terrorism and extremism
    "S10": "A.2.i",  # hate on protected characteristics: discrimination, "other" (no single basis)
    "S11": "X.self_harm",  # the bundled model's self-harm code, so policies treat both alike
    "S12": "A.1.f",  # sexual content: obscenity
    "S13": "A.1.g",  # false information about elections: false harmful information
    "S14": "X.code_abuse",  # abuse of a code interpreter: an agent risk, not content
}

#: Qwen3Guard-Gen's categories (``Categories:`` line); ``None`` is no category.
QWEN3GUARD = {
    "Violent": "A.1.f",
    "Non-violent Illegal Acts": "X.illegal_request",
    "Sexual Content or Sexual Acts": "A.1.f",
    "PII": "A.4.f",  # personal information
    "Suicide & Self-Harm": "X.self_harm",
    # Bias, insults, harassment, misinformation on ethics...: too broad for one Appendix A code,
    # so the overall code; a policy wanting A.2.i or A.4.d overrides it.
    "Unethical Acts": "X.harmful",
    # Qwen defines it as false information about governments, history and public figures.
    "Politically Sensitive Topics": "A.1.g",
    "Copyright Violation": "A.3.a",
    "Jailbreak": "X.jailbreak",
}


@dataclass(frozen=True, slots=True)
class ShieldPolicy:
    """One ShieldGemma harm type: its guideline for prompts and for responses, and its code."""

    title: str
    prompt: str
    response: str
    code: str


def _shield(title: str, content: str, code: str) -> ShieldPolicy:
    """The model card's guideline wording: 'The prompt shall not contain or seek generation of
    content that ...' for prompts, 'The chatbot shall not generate content that ...' for answers."""
    return ShieldPolicy(
        title,
        f'"{title}": The prompt shall not contain or seek generation of content that {content}',
        f'"{title}": The chatbot shall not generate content that {content}',
        code,
    )


#: ShieldGemma's four harm types, by the name a policy selects them with (``policies:``).
SHIELDGEMMA = {
    # Weapons, explosives, terrorism, suicide instructions: broader than A.1.d, so the overall code.
    "dangerous": _shield(
        "No Dangerous Content",
        "harming oneself and/or others (e.g., accessing or building firearms and explosive devices, "
        "promotion of terrorism, instructions for suicide).",
        "X.harmful",
    ),
    "harassment": _shield(  # abuse aimed at a person: honour (insults), as modgate-guard maps it
        "No Harassment",
        "is malicious, intimidating, bullying, or abusive content targeting another individual (e.g., "
        "physical threats, denial of tragic events, disparaging victims of violence).",
        "A.4.d",
    ),
    "hate": _shield(  # hate on any protected attribute: discrimination, "other"
        "No Hate Speech",
        "targeting identity and/or protected attributes (e.g., racial slurs, promotion of "
        "discrimination, calls to violence against protected groups) or dehumanizing/belittling/"
        "vilifying on the bases of race, ethnicity, religion, disability, age, nationality, veteran "
        "status, sexual orientation, gender, gender identity, caste, or any other protected status. "
        "We do allow content that includes a reference to a protected individual or group in a "
        "positive manner.",
        "A.2.i",
    ),
    "sexual": _shield(
        "No Sexually Explicit Information",
        "contains references to sexual acts or other lewd content (e.g., sexually graphic "
        "descriptions, content aimed at causing arousal). Medical or scientific terms related to "
        "human anatomy or sex education are permitted.",
        "A.1.f",
    ),
}
