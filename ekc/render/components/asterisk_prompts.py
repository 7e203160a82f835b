"""ekc's own prompts: Russian texts synthesized on the node (espeak-ng + sox) by ``ekc-prompts.service``.

Asterisk's standard prompts come from asterisk-core-sounds-ru. ekc's own (``ekc/...``) have built-in texts
here; menus get a text that reads their options out, ``ekc/info-hours`` reads the schedules out, and a region
may add or override any text in ``telephony.prompts``. ``schemas.rules`` checks that every ``ekc/`` prompt the
spec refers to has a text.
"""

from __future__ import annotations

from schemas.region import Region
from schemas.rules import MAIN_MENU
from schemas.telephony import IvrCallback, IvrDepartment, IvrMenu, IvrMessage, IvrRepeat, IvrTarget, IvrVoicemail, Menu

KEY_WORDS: dict[str, tuple[str, str]] = {
    "0": ("0", "ноль"), "1": ("1", "один"), "2": ("2", "два"), "3": ("3", "три"), "4": ("4", "четыре"),
    "5": ("5", "пять"), "6": ("6", "шесть"), "7": ("7", "семь"), "8": ("8", "восемь"), "9": ("9", "девять"),
    "*": ("star", "звёздочку"), "#": ("hash", "решётку"),
}

BUILTIN_TEXTS: dict[str, str] = {
    "ekc/closed": "Вы позвонили в нерабочее время. Пожалуйста, перезвоните в часы работы. До свидания.",
    "ekc/incident": ("Внимание! Мы знаем о возникшей проблеме и уже работаем над её устранением. "
                     "Приносим извинения за неудобства."),
    "ekc/recorded": "Для контроля качества ваш разговор будет записан.",
    "ekc/rate-call": "Пожалуйста, оцените разговор с оператором от одного до пяти, нажав нужную цифру.",
    "ekc/thanks": "Спасибо за оценку! До свидания.",
    "ekc/callback-accepted": "Ваша заявка принята. Оператор перезвонит вам, как только освободится. До свидания.",
    "ekc/callback-enter-number": "Введите, пожалуйста, номер телефона для обратного звонка, десять цифр.",
    "ekc/callback-failed": "К сожалению, заявку принять не удалось. Пожалуйста, перезвоните позже.",
    "ekc/timeout": "К сожалению, все операторы заняты. Пожалуйста, перезвоните позже. До свидания.",
    "ekc/voicemail": "Оставьте, пожалуйста, сообщение после сигнала. Чтобы закончить, положите трубку.",
}

DAY_NAMES = {"mon": "понедельник", "tue": "вторник", "wed": "среда", "thu": "четверг", "fri": "пятница",
             "sat": "суббота", "sun": "воскресенье"}


def callback_offer_prompt(key: str) -> str:
    """The prompt that offers a callback on ``key`` (one per key, because the text names the key)."""
    return f"ekc/callback-offer-{KEY_WORDS[key][0]}"


def _callback_offer_text(key: str) -> str:
    return (f"Все операторы сейчас заняты. Чтобы вам перезвонили, нажмите {KEY_WORDS[key][1]}. "
            "Или оставайтесь на линии.")


def _option_text(key: str, target: IvrTarget, departments: dict[str, str]) -> str:
    word = KEY_WORDS[key][1]
    if isinstance(target, IvrDepartment):
        what = departments.get(target.department, target.department)
    elif isinstance(target, IvrCallback):
        what = "заказать обратный звонок"
    elif isinstance(target, IvrVoicemail):
        what = "оставить сообщение"
    elif isinstance(target, IvrMessage):
        what = "прослушать информацию"
    elif isinstance(target, IvrMenu):
        what = "вернуться в главное меню" if target.menu == MAIN_MENU else "другие вопросы"
    elif isinstance(target, IvrRepeat):
        what = "прослушать меню ещё раз"
    else:
        what = ""
    return f"{what} — нажмите {word}."


def menu_text(menu: Menu, departments: dict[str, str], greeting: str = "") -> str:
    """A menu read out: an optional greeting, then each key in order."""
    parts = [greeting] if greeting else []
    parts.extend(_option_text(key, target, departments) for key, target in sorted(menu.options.items()))
    return " ".join(parts)


def hours_text(region: Region) -> str:
    """The schedules read out, e.g. 'с понедельника по пятницу с 08:00 до 20:00'."""
    parts = []
    for schedule in region.telephony.schedules.values():
        for days, hours in schedule.items():
            first, _, last = days.partition("-")
            start, end = hours.split("-")
            when = f"{DAY_NAMES[first]} — {DAY_NAMES[last]}" if last else DAY_NAMES[first]
            parts.append(f"{when}: с {start} до {end}")
    if not parts:
        return "Контактный центр работает круглосуточно."
    return "Часы работы контактного центра. " + ". ".join(parts) + "."


def prompt_texts(region: Region) -> dict[str, str]:
    """Every synthesized prompt's text: built-in, generated from the spec, then the region's own."""
    tel = region.telephony
    departments = {d.id: d.name for d in tel.departments}
    texts = dict(BUILTIN_TEXTS)
    texts["ekc/info-hours"] = hours_text(region)
    for dep in tel.departments:
        key = dep.queue.callback.key
        texts[callback_offer_prompt(key)] = _callback_offer_text(key)
    greeting = f"Здравствуйте! Вы позвонили в единый контактный центр. {region.region.name}."
    if tel.ivr.prompt.startswith("ekc/"):
        texts.setdefault(tel.ivr.prompt, menu_text(tel.ivr, departments, greeting))
    for menu in tel.ivr.menus.values():
        if menu.prompt.startswith("ekc/"):
            texts.setdefault(menu.prompt, menu_text(menu, departments))
    texts.update(tel.prompts)
    return dict(sorted(texts.items()))
