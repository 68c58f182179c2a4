"""A generated city-government directory for the demo and tests: realistic, deterministic, a little broken.

The tree looks like Moscow's government: departments with their управления, отделы and сектора; prefectures
with their district councils (управы) and the same "Отдел ЖКХ" under every управа; a contact centre with far
more direct members than a room may hold. The names exercise what real directories contain and mappers get
wrong: Cyrillic, ё, hyphenated surnames, unit names that need RFC 4514 escaping, logins that collide once
lowercased or transliterated, and a handful of entries a reader must skip.

Rules the generator keeps (tests rely on them):

* Rule 1: the same arguments give byte-identical LDIF; every ``entryUUID`` is :func:`entry_uuid` of the seed
  and the entry's kind and index, so a test can predict each person's anchor.
* Rule 2: exactly ``people`` well-formed persons (objectClass inetOrgPerson, with uid, names and a unit);
  the broken entries are extra and listed in :attr:`SampleDirectory.broken`.
* Rule 3: units come before the entries below them, so ``slapadd`` can load the file in order.
"""

from __future__ import annotations

import base64
import heapq
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.core.dn import AVA, format_dn, parse_dn
from provisioner.core.identity import transliterate

__all__ = [
    "SAMPLE_NAMESPACE",
    "BrokenEntry",
    "LdifEntry",
    "SampleDirectory",
    "SamplePerson",
    "SampleUnit",
    "entry_uuid",
    "generate_directory",
    "write_ldif",
]

#: uuid5 namespace of every generated ``entryUUID``.
SAMPLE_NAMESPACE = uuid.UUID("0b6a6c1e-5f1d-4c3a-9d59-6d6f732e7465")

SERVICE_RDN = "cn=provisioner"


def entry_uuid(seed: int, kind: str, index: int) -> str:
    """The ``entryUUID`` of entry ``index`` of ``kind`` ("person", "unit", "broken" or "base")."""
    return str(uuid.uuid5(SAMPLE_NAMESPACE, f"{seed}:{kind}:{index}"))


# ---------------------------------------------------------------------------------------------------------
# Public data


@dataclass(frozen=True, slots=True)
class LdifEntry:
    """One LDIF record; attribute order is kept as written."""

    dn: str
    attributes: tuple[tuple[str, tuple[str, ...]], ...]

    def get(self, name: str) -> tuple[str, ...]:
        """The values of attribute ``name`` (case-insensitive), empty if absent."""
        key = name.lower()
        for attr, values in self.attributes:
            if attr.lower() == key:
                return values
        return ()

    def first(self, name: str) -> str | None:
        """The first value of ``name``, or ``None``."""
        values = self.get(name)
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class SampleUnit:
    """An ``organizationalUnit``; ``size`` counts its direct well-formed members."""

    dn: str
    name: str
    parent_dn: str
    depth: int
    size: int


@dataclass(frozen=True, slots=True)
class SamplePerson:
    """A person worth naming in docs, demos and tests; ``note`` says why."""

    uid: str
    display_name: str
    dn: str
    entry_uuid: str
    title: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class BrokenEntry:
    """An entry a reader must skip with a warning."""

    dn: str
    reason: str


@dataclass(frozen=True, slots=True)
class SampleDirectory:
    """A generated directory: its LDIF entries plus what the docs and tests want to know about them."""

    base_dn: str
    seed: int
    entries: tuple[LdifEntry, ...] = field(repr=False)
    units: tuple[SampleUnit, ...] = field(repr=False)
    people: int
    disabled: int
    big_unit_dn: str
    largest_unit: int
    max_depth: int
    broken: tuple[BrokenEntry, ...]
    special: tuple[SamplePerson, ...]
    samples: tuple[SamplePerson, ...]
    service_dn: str
    service_password: str = field(repr=False)

    def __str__(self) -> str:
        return self.summary()

    def to_ldif(self) -> str:
        """The whole directory as LDIF (RFC 2849), ready for ``slapadd``."""
        return "".join(_render(e) for e in self.entries)

    def summary(self) -> str:
        """A few lines for the CLI and the demo."""
        lines = [
            f"base {self.base_dn}: {self.people} people in {len(self.units)} units "
            f"(max depth {self.max_depth}), {self.disabled} disabled, {len(self.broken)} broken entries",
            f"largest unit: {self.largest_unit} direct members ({self.big_unit_dn})",
            "sample logins:",
        ]
        lines += [f"  {p.uid:<20} {p.display_name} — {p.title}" for p in self.samples]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Names

# One string split once reads better than 250 quoted words.
_MALE_SURNAMES = (  # noqa: SIM905
    "Иванов Смирнов Кузнецов Попов Васильев Петров Соколов Михайлов Новиков Фёдоров Морозов Волков Алексеев "
    "Лебедев Семёнов Егоров Павлов Козлов Степанов Николаев Орлов Андреев Макаров Никитин Захаров Зайцев "
    "Соловьёв Борисов Яковлев Григорьев Романов Воробьёв Сергеев Кузьмин Фролов Александров Дмитриев "
    "Королёв Гусев Киселёв Ильин Максимов Поляков Сорокин Виноградов Ковалёв Белов Медведев Антонов Тарасов "
    "Жуков Баранов Филиппов Комаров Давыдов Беляев Герасимов Богданов Осипов Сидоров Матвеев Титов Марков "
    "Миронов Крылов Куликов Карпов Власов Мельников Денисов Гаврилов Тихонов Казаков Афанасьев Данилов "
    "Савельев Тимофеев Фомин Чернов Абрамов Мартынов Ефимов Федотов Щербаков Назаров Калинин Исаев "
    "Чернышёв Быков Маслов Родионов Коновалов Лазарев Воронин Климов Филатов Пономарёв Голубев Кудрявцев "
    "Прохоров Наумов Потапов Журавлёв Овчинников Трофимов Леонов Соболев Ермаков Колесников Гончаров "
    "Емельянов Никифоров Грачёв Котов Гришин Ефремов Архипов Громов Кириллов Малышев Панов Моисеев Румянцев "
    "Акимов Кондратьев Бирюков Горбунов Анисимов Ерёмин Тихомиров Галкин Лукьянов Михеев Скворцов Юдин "
    "Белоусов Нестеров Симонов Прокофьев Харитонов Князев Цветков Левин Митрофанов Воронов Аксёнов Мальцев "
    "Логинов Горшков Савин Краснов Майоров Демидов Елисеев Рыбаков Сафонов Плотников Дёмин Хохлов Фадеев "
    "Молчанов Игнатов Литвинов Ершов Ушаков Дементьев Рябов Мухин Калашников Леонтьев Лобанов Корнилов "
    "Евдокимов Бородин Платонов Некрасов Балашов Бобров Жданов Блинов Игнатьев Коротков Муравьёв Крюков "
    "Дроздов Лавров Зуев Петухов Ларин Никулин Серов Терентьев Зотов Устинов Фокин Самойлов Константинов "
    "Сахаров Шишкин Самсонов Черкасов Чистяков Носов Спиридонов Карасёв Авдеев Воронцов Зверев Селезнёв "
    "Нечаев Кудряшов Седов Фирсов Панин Головин Терехов Ульянов Шестаков Агеев Никонов Баженов Гордеев "
    "Вишневский Ковальский Островский Успенский Преображенский Покровский Воскресенский Троицкий Введенский "
    "Рождественский Высоцкий Новицкий Толстой Трубецкой Лановой Береговой Бессмертный Шевченко Коваленко "
    "Бондаренко Ткаченко Кравченко Черных Седых Белых Долгих Шевчук Ковальчук Полищук Гончарук"
).split()
_HYPHENATED = ("Римский-Корсаков", "Петров-Водкин", "Мамин-Сибиряк", "Соколов-Микитов", "Семёнов-Тян-Шанский")

_MALE_NAMES = (
    # (name, male patronymic, female patronymic) written out: the rules have too many exceptions (Илья, Лев).
    ("Александр", "Александрович", "Александровна"),
    ("Алексей", "Алексеевич", "Алексеевна"),
    ("Андрей", "Андреевич", "Андреевна"),
    ("Антон", "Антонович", "Антоновна"),
    ("Артём", "Артёмович", "Артёмовна"),
    ("Борис", "Борисович", "Борисовна"),
    ("Вадим", "Вадимович", "Вадимовна"),
    ("Валерий", "Валерьевич", "Валерьевна"),
    ("Василий", "Васильевич", "Васильевна"),
    ("Виктор", "Викторович", "Викторовна"),
    ("Владимир", "Владимирович", "Владимировна"),
    ("Вячеслав", "Вячеславович", "Вячеславовна"),
    ("Геннадий", "Геннадьевич", "Геннадьевна"),
    ("Георгий", "Георгиевич", "Георгиевна"),
    ("Григорий", "Григорьевич", "Григорьевна"),
    ("Денис", "Денисович", "Денисовна"),
    ("Дмитрий", "Дмитриевич", "Дмитриевна"),
    ("Евгений", "Евгеньевич", "Евгеньевна"),
    ("Егор", "Егорович", "Егоровна"),
    ("Иван", "Иванович", "Ивановна"),
    ("Игорь", "Игоревич", "Игоревна"),
    ("Илья", "Ильич", "Ильинична"),
    ("Кирилл", "Кириллович", "Кирилловна"),
    ("Константин", "Константинович", "Константиновна"),
    ("Леонид", "Леонидович", "Леонидовна"),
    ("Лев", "Львович", "Львовна"),
    ("Максим", "Максимович", "Максимовна"),
    ("Михаил", "Михайлович", "Михайловна"),
    ("Никита", "Никитич", "Никитична"),
    ("Николай", "Николаевич", "Николаевна"),
    ("Олег", "Олегович", "Олеговна"),
    ("Павел", "Павлович", "Павловна"),
    ("Пётр", "Петрович", "Петровна"),
    ("Роман", "Романович", "Романовна"),
    ("Сергей", "Сергеевич", "Сергеевна"),
    ("Степан", "Степанович", "Степановна"),
    ("Фёдор", "Фёдорович", "Фёдоровна"),
    ("Юрий", "Юрьевич", "Юрьевна"),
    ("Ярослав", "Ярославович", "Ярославовна"),
)
_FEMALE_NAMES = (  # noqa: SIM905
    "Анна Мария Елена Ольга Наталья Татьяна Ирина Светлана Екатерина Юлия Анастасия Марина Людмила Галина "
    "Надежда Валентина Вера Любовь Ксения Дарья Алина Виктория Евгения Оксана Полина Софья Алёна Кристина "
    "Елизавета Лариса Нина Тамара Жанна Инна Зоя Лидия Маргарита Яна Вероника Алла"
).split()

#: First names by gender, for tests that check agreement.
MALE_FIRST_NAMES = frozenset(n for n, _, _ in _MALE_NAMES)
FEMALE_FIRST_NAMES = frozenset(_FEMALE_NAMES)


def _female_surname_part(part: str) -> str:
    for male, female in (("ский", "ская"), ("цкий", "цкая"), ("цкой", "цкая"), ("ой", "ая"), ("ый", "ая")):
        if part.endswith(male):
            return part[: -len(male)] + female
    if part.endswith(("ов", "ев", "ёв", "ин", "ын")):
        return part + "а"
    return part  # Шевченко, Черных, Шевчук, Сибиряк, Цой do not change with gender


def female_surname(male: str) -> str:
    """The feminine form of a Russian surname, part by part for hyphenated ones (Римская-Корсакова)."""
    return "-".join(_female_surname_part(p) for p in male.split("-"))


# ---------------------------------------------------------------------------------------------------------
# The unit tree: kinds, names, titles, sizes

_DEPARTMENTS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    # (name, its own управления, pattern of numbered subordinate institutions or "")
    (
        "Департамент транспорта и развития дорожно-транспортной инфраструктуры",
        ("Управление организации дорожного движения", "Управление пассажирского транспорта",
         "Управление развития транспортной инфраструктуры", "Управление такси и каршеринга"),
        "",
    ),
    (
        "Департамент образования и науки",
        ("Управление общего образования", "Управление воспитательной работы",
         "Управление дошкольного образования", "Управление профессионального образования"),
        "ГБОУ Школа № {n}",
    ),
    (
        "Департамент здравоохранения",
        ("Управление организации медицинской помощи", "Управление лекарственного обеспечения",
         "Управление кадров здравоохранения"),
        "ГБУЗ Городская поликлиника № {n}",
    ),
    (
        "Департамент информационных технологий",
        ("Управление информационной безопасности", "Управление цифровых сервисов",
         "Управление ИТ-инфраструктуры", "Управление развития ЕМИАС"),
        "",
    ),
    (
        "Департамент жилищно-коммунального хозяйства",
        ("Управление эксплуатации жилищного фонда", "Управление топливно-энергетического хозяйства",
         "Управление благоустройства"),
        "",
    ),
    (
        "Департамент труда и социальной защиты населения",
        ("Управление социальной поддержки семей с детьми", "Управление по делам старшего поколения",
         "Управление занятости населения"),
        "ГБУ ТЦСО № {n}",
    ),
    (
        "Департамент культуры",
        ("Управление музейной деятельности", "Управление библиотечной деятельности",
         "Управление театрально-концертной деятельности"),
        "ГБУК Библиотека № {n}",
    ),
    (
        "Департамент финансов",
        ("Бюджетное управление", "Управление казначейского исполнения бюджета",
         "Управление государственного долга"),
        "",
    ),
    (
        "Департамент городского имущества",
        ("Управление земельных отношений", "Управление жилищного фонда", "Управление нежилого фонда"),
        "",
    ),
    (
        "Департамент строительства",
        ("Управление дорожного строительства", "Управление строительства социальных объектов"),
        "",
    ),
    (
        "Департамент природопользования и охраны окружающей среды",
        ("Управление особо охраняемых природных территорий", "Управление экологического контроля"),
        "",
    ),
    (
        "Департамент экономической политики и развития",
        ("Управление инвестиционной политики", "Управление тарифного регулирования"),
        "",
    ),
    ("Департамент торговли и услуг", ("Управление нестационарной торговли", "Управление ярмарок"), ""),
    (
        "Департамент по делам гражданской обороны, чрезвычайным ситуациям и пожарной безопасности",
        ("Управление гражданской обороны", "Управление пожарной безопасности"),
        "",
    ),
    ("Департамент спорта", ("Управление массового спорта", "Управление спорта высших достижений"), ""),
    (
        "Департамент региональной безопасности и противодействия коррупции",
        ("Управление по противодействию коррупции", "Управление региональной безопасности"),
        "",
    ),
    ("Департамент градостроительной политики", ("Управление градостроительного планирования",), ""),
    ("Департамент средств массовой информации и рекламы", ("Управление наружной рекламы",), ""),
)  # fmt: skip

_GENERIC_UPRAVLENIYA = (
    "Управление кадровой политики",
    "Управление правового обеспечения",
    "Финансово-экономическое управление",
    "Управление делами",
    "Управление по работе с обращениями граждан",
)
_OTDELY = (
    "Отдел кадров",
    "Юридический отдел",
    "Отдел бухгалтерского учёта",
    "Отдел планирования и анализа",
    "Отдел контроля исполнения поручений",
    "Отдел методического обеспечения",
    "Отдел мониторинга",
    "Отдел государственных закупок",
    "Отдел документационного обеспечения",
    "Отдел информационно-аналитической работы",
    "Отдел взаимодействия с органами власти",
    "Отдел нормативно-правового регулирования",
    "Отдел проектного управления",
    "Отдел сопровождения информационных систем",
)
_SEKTORA = (
    "Сектор отчётности",
    "Сектор делопроизводства",
    "Сектор мониторинга",
    "Сектор методической работы",
    "Сектор аналитики",
    "Сектор договорной работы",
)
_PREFECTURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Префектура ЦАО", ("Управа Басманного района", "Управа района Арбат", "Управа Мещанского района",
                        "Управа Пресненского района", "Управа Таганского района", "Управа Тверского района",
                        "Управа района Хамовники", "Управа района Замоскворечье", "Управа района Якиманка",
                        "Управа Красносельского района")),
    ("Префектура ЮАО", ("Управа района Бирюлёво Восточное", "Управа района Бирюлёво Западное",
                        "Управа района Чертаново Северное", "Управа района Чертаново Центральное",
                        "Управа района Чертаново Южное", "Управа Даниловского района",
                        "Управа Донского района",
                        "Управа района Зябликово", "Управа района Орехово-Борисово Северное",
                        "Управа района Царицыно", "Управа Нагорного района", "Управа района Братеево")),
    ("Префектура САО", ("Управа района Аэропорт", "Управа района Беговой", "Управа Тимирязевского района",
                        "Управа Хорошёвского района", "Управа района Сокол", "Управа Савёловского района",
                        "Управа района Коптево")),
    ("Префектура СВАО", ("Управа района Марьина Роща", "Управа Останкинского района",
                         "Управа района Отрадное",
                         "Управа района Бибирево", "Управа Бутырского района", "Управа района Свиблово")),
    ("Префектура ВАО", ("Управа района Богородское", "Управа района Гольяново", "Управа района Измайлово",
                        "Управа района Перово", "Управа района Сокольники", "Управа района Новогиреево")),
    ("Префектура ЮВАО", ("Управа района Выхино-Жулебино", "Управа района Капотня", "Управа района Лефортово",
                         "Управа района Люблино", "Управа района Марьино", "Управа района Текстильщики")),
    ("Префектура ЮЗАО", ("Управа Академического района", "Управа района Зюзино", "Управа района Коньково",
                         "Управа Ломоносовского района", "Управа района Тёплый Стан",
                         "Управа района Ясенево")),
    ("Префектура ЗАО", ("Управа района Дорогомилово", "Управа района Кунцево", "Управа района Раменки",
                        "Управа района Солнцево", "Управа района Фили-Давыдково",
                        "Управа района Тропарёво-Никулино")),
    ("Префектура СЗАО", ("Управа района Митино", "Управа района Строгино", "Управа района Хорошёво-Мнёвники",
                         "Управа района Щукино", "Управа района Покровское-Стрешнево",
                         "Управа района Северное Тушино")),
    ("Префектура ЗелАО", ("Управа района Крюково", "Управа района Матушкино", "Управа района Савёлки",
                          "Управа района Силино", "Управа района Старое Крюково")),
    ("Префектура ТиНАО", ("Администрация поселения Сосенское", "Администрация поселения Внуковское",
                          "Администрация поселения Московский", "Администрация поселения Щербинка")),
)  # fmt: skip
_PREFECTURE_UPRAVLENIYA = (
    "Управление ЖКХ и благоустройства",
    "Управление по работе с населением",
    "Управление экономики и потребительского рынка",
    "Управление капитального строительства",
    "Управление делами префектуры",
)
_UPRAVA_OTDELY = (
    "Отдел ЖКХ",  # every управа has one: the same name under many parents is normal and must stay
    "Отдел по работе с населением",
    "Сектор опеки и попечительства",
    "Отдел бухгалтерского учёта и отчётности",
    "Отдел строительства и землепользования",
    "Отдел потребительского рынка и услуг",
    "Сектор кадров",
)
_ZHKKH_SEKTORA = ("Сектор благоустройства", "Сектор содержания жилищного фонда")

# The units whose names need RFC 4514 escaping; tests look for each of them.
NAME_WITH_COMMA = "Отдел учёта, отчётности и контроля"
NAME_WITH_QUOTES = 'Отдел "Мои документы"'
NAME_WITH_PLUS = "Отдел закупок (44-ФЗ + 223-ФЗ)"
NAME_WITH_HASH = "#МыВместе — штаб волонтёров"
NAME_WITH_TRAILING_SPACE = "Сектор архива "
# Over 120 characters but under slapd's limit: back-mdb refuses an RDN longer than about 240 bytes of UTF-8
# (MDB_BAD_VALSIZE), i.e. about 120 Cyrillic letters, so a real directory cannot hold much longer unit names.
NAME_LONG = (
    "Отдел организации предоставления госуслуг в сфере здравоохранения и взаимодействия с МФЦ "
    "(приказ ДЗМ № 1234 от 15.03.2024)"
)
MFC = "ГБУ МФЦ города Москвы"
BIG_UNIT = "Единый контакт-центр"

# (kind, name) paths created before anything else, so even a 300-person directory has every case.
_CORE: tuple[tuple[tuple[str, str], ...], ...] = (
    (("mfc", MFC), ("big", BIG_UNIT)),
    (("mfc", MFC), ("otdel", NAME_WITH_QUOTES)),
    (
        ("dept", "Департамент информационных технологий"),
        ("upr", "Управление информационной безопасности"),
        ("otdel", NAME_WITH_COMMA),
        ("sector", NAME_WITH_TRAILING_SPACE),
    ),
    (
        ("dept", "Департамент транспорта и развития дорожно-транспортной инфраструктуры"),
        ("upr", "Управление делами"),
        ("otdel", NAME_WITH_PLUS),
    ),
    (
        ("dept", "Департамент образования и науки"),
        ("upr", "Управление воспитательной работы"),
        ("otdel", NAME_WITH_HASH),
    ),
    (
        ("dept", "Департамент здравоохранения"),
        ("upr", "Управление организации медицинской помощи"),
        ("otdel", NAME_LONG),
        ("sector", "Сектор мониторинга"),
    ),
    (
        ("pref", "Префектура ЮАО"),
        ("uprava", "Управа района Бирюлёво Восточное"),
        ("otdel_zhkkh", "Отдел ЖКХ"),
        ("sector", "Сектор благоустройства"),
    ),
    (("pref", "Префектура ЦАО"), ("uprava", "Управа Басманного района"), ("otdel_zhkkh", "Отдел ЖКХ")),
    (
        ("dept", "Департамент жилищно-коммунального хозяйства"),
        ("upr", "Управление эксплуатации жилищного фонда"),
        ("service", "Служба технического надзора"),
        ("otdel", "Отдел контроля лифтового хозяйства"),
        ("sector", "Сектор диспетчеризации"),
    ),
)

_HEAD_TITLE = {
    "dept": "Руководитель департамента",
    "upr": "Начальник управления",
    "service": "Начальник службы",
    "otdel": "Начальник отдела",
    "otdel_zhkkh": "Начальник отдела",
    "sector": "Заведующий сектором",
    "pref": "Префект",
    "uprava": "Глава управы",
    "mfc": "Директор",
    "big": "Начальник контакт-центра",
    "school": "Директор",
    "clinic": "Главный врач",
    "institution": "Директор",
    "centre": "Руководитель центра госуслуг",
}
_DEPUTY_TITLE = {
    "dept": "Заместитель руководителя департамента",
    "upr": "Заместитель начальника управления",
    "service": "Заместитель начальника службы",
    "otdel": "Заместитель начальника отдела",
    "otdel_zhkkh": "Заместитель начальника отдела",
    "pref": "Заместитель префекта",
    "uprava": "Заместитель главы управы",
    "mfc": "Заместитель директора",
    "big": "Заместитель начальника контакт-центра",
    "school": "Заместитель директора",
    "clinic": "Заместитель главного врача",
    "institution": "Заместитель директора",
    "centre": "Заместитель руководителя центра госуслуг",
}
_CIVIL = (
    "Консультант",
    "Главный специалист",
    "Ведущий специалист",
    "Главный эксперт",
    "Специалист 1 разряда",
)
_STAFF_TITLES = {
    "dept": ("Советник руководителя департамента", "Помощник руководителя департамента", "Главный советник"),
    "pref": ("Советник префекта", "Помощник префекта", "Главный советник"),
    "uprava": ("Советник главы управы", "Главный специалист", "Ведущий специалист", "Секретарь"),
    "big": ("Оператор контакт-центра", "Оператор контакт-центра", "Старший оператор", "Супервайзер"),
    "mfc": ("Главный специалист", "Ведущий специалист", "Специалист"),
    "school": ("Учитель", "Учитель", "Педагог-организатор", "Педагог-психолог", "Социальный педагог"),
    "clinic": ("Врач-терапевт участковый", "Медицинская сестра", "Врач общей практики", "Регистратор"),
    "institution": ("Специалист по социальной работе", "Социальный работник", "Главный специалист"),
    "centre": ("Главный эксперт", "Ведущий эксперт", "Эксперт", "Администратор зала"),
}
_SIZE = {  # direct members (head included): (low, high); most units have 5–60
    "dept": (4, 12),
    "upr": (3, 10),
    "service": (3, 8),
    "otdel": (5, 40),
    "otdel_zhkkh": (6, 25),
    "sector": (3, 12),
    "pref": (5, 15),
    "uprava": (6, 20),
    "mfc": (5, 10),
    "school": (15, 60),
    "clinic": (20, 60),
    "institution": (10, 40),
    "centre": (15, 45),
}


@dataclass(slots=True)
class _Unit:
    index: int
    kind: str
    name: str
    parent: _Unit | None
    dn: str
    depth: int
    cost: float
    size: int = 0
    mins: int = 0
    children: dict[str, _Unit] = field(default_factory=dict)
    head_dn: str | None = None


_RDN_SPECIAL = frozenset(',+"\\<>;=\0')


def _rdn(attr: str, value: str) -> str:
    if value and value[0] not in " #" and value[-1] != " " and _RDN_SPECIAL.isdisjoint(value):
        return f"{attr}={value}"  # nothing to escape: skip the general formatter (most of 250,000 logins)
    return format_dn(((AVA(attr, value),),))


class _TreeBuilder:
    def __init__(self, rng: random.Random, base_dn: str) -> None:
        self.rng = rng
        self.root = _Unit(-1, "root", "", None, base_dn, 0, 0.0)
        self.units: list[_Unit] = []

    def child(self, parent: _Unit, kind: str, name: str, cost: float) -> tuple[_Unit, bool]:
        """The child ``name`` of ``parent``, created if new; the flag says whether it was created."""
        existing = parent.children.get(name)
        if existing is not None:
            return existing, False
        unit = _Unit(
            len(self.units), kind, name, parent, f"{_rdn('ou', name)},{parent.dn}", parent.depth + 1, cost
        )
        lo, hi = _SIZE.get(kind, (5, 30))
        # A long tail: one unit in twelve is a big отдел of up to 60.
        unit.size = (
            self.rng.randint(40, 60)
            if kind == "otdel" and self.rng.random() < 0.08
            else self.rng.randint(lo, hi)
        )
        parent.children[name] = unit
        self.units.append(unit)
        return unit, True

    def child_names(self, unit: _Unit) -> Iterator[tuple[str, str]]:
        """The children a unit of this kind has, in the order they are added (may be endless)."""
        rng = self.rng
        match unit.kind:
            case "root":
                yield "mfc", MFC
                for i in range(max(len(_DEPARTMENTS), len(_PREFECTURES))):
                    if i < len(_DEPARTMENTS):
                        yield "dept", _DEPARTMENTS[i][0]
                    if i < len(_PREFECTURES):
                        yield "pref", _PREFECTURES[i][0]
            case "dept":
                own, pattern = next((u, p) for n, u, p in _DEPARTMENTS if n == unit.name)
                yield from (("upr", n) for n in own + _GENERIC_UPRAVLENIYA)
                if pattern:
                    kind = (
                        "school"
                        if "Школа" in pattern
                        else "clinic"
                        if "поликлиника" in pattern
                        else "institution"
                    )
                    for n in range(1, 100_000):
                        yield kind, pattern.format(n=n * 7 % 2000 + 1 if kind == "school" else n)
            case "upr" | "service":
                for name in rng.sample(_OTDELY, rng.randint(3, 8)):
                    yield "otdel", name
            case "otdel":
                if unit.depth < 5:
                    for name in rng.sample(_SEKTORA, rng.choice((0, 0, 1, 2, 3))):
                        yield "sector", name
            case "otdel_zhkkh":
                yield from (("sector", n) for n in _ZHKKH_SEKTORA)
            case "pref":
                uprava_names = next(u for n, u in _PREFECTURES if n == unit.name)
                for i in range(max(len(uprava_names), len(_PREFECTURE_UPRAVLENIYA))):
                    if i < len(uprava_names):
                        yield "uprava", uprava_names[i]
                    if i < len(_PREFECTURE_UPRAVLENIYA):
                        yield "upr", _PREFECTURE_UPRAVLENIYA[i]
            case "uprava":
                for name in _UPRAVA_OTDELY:
                    yield ("otdel_zhkkh" if name == "Отдел ЖКХ" else "otdel"), name
            case "mfc":
                for _, upravy in _PREFECTURES:
                    for uprava in upravy:
                        district = uprava.removeprefix("Управа ").removeprefix("Администрация ")
                        yield "centre", f"Центр госуслуг {district}"
            case _:
                return


def _build_tree(rng: random.Random, base_dn: str, capacity: int) -> _TreeBuilder:
    """Grow the tree best-first until its units can hold ``capacity`` people.

    Best-first on a cost (a first child costs its parent + 1, each later sibling 1 more; top-level siblings
    only 0.3 more) keeps the tree both deep and wide at every size instead of filling one level at a time.
    """
    tree = _TreeBuilder(rng, base_dn)
    for path in _CORE:
        parent = tree.root
        for depth, (kind, name) in enumerate(path, 1):
            parent, _ = tree.child(parent, kind, name, float(depth))
    total = sum(u.size for u in tree.units if u.kind != "big")
    counter = 0
    heap: list[tuple[float, int, _Unit, Iterator[tuple[str, str]]]] = [
        (1.0, counter, tree.root, tree.child_names(tree.root))
    ]
    while heap and total < capacity:
        cost, _, parent, names = heapq.heappop(heap)
        item = next(names, None)
        if item is None:
            continue
        kind, name = item
        unit, created = tree.child(parent, kind, name, cost)
        if created:
            total += unit.size
        counter += 1
        heapq.heappush(heap, (cost + (0.3 if parent is tree.root else 1.0), counter, parent, names))
        counter += 1
        heapq.heappush(heap, (cost + 1.0, counter, unit, tree.child_names(unit)))
    return tree


def _fit(units: list[_Unit], total: int) -> None:
    """Scale unit sizes so they add up to ``total`` exactly, keeping each unit's minimum when possible."""
    current = sum(u.size for u in units)
    if current == total or not units:
        return
    floors = [min(u.mins, u.size) for u in units]
    spare = total - sum(floors)
    if spare < 0:  # too few people even for the minimums: fill units in order
        left = total
        for u in units:
            u.size = min(u.size, left)
            left -= u.size
        return
    flexible = sum(u.size - f for u, f in zip(units, floors, strict=True))
    if total > current:
        # More people than the tree holds: grow the ordinary отделы, never the heads-only units.
        extra = total - current
        growable = [u for u in units if u.kind in ("otdel", "school", "clinic", "centre")] or units
        for i in range(extra):
            growable[i % len(growable)].size += 1
        return
    acc = 0.0
    given = 0
    for u, f in zip(units, floors, strict=True):
        acc += (u.size - f) * spare / flexible if flexible else 0
        share = int(acc) - given
        given += share
        u.size = f + share
    units[-1].size += total - sum(u.size for u in units)


# ---------------------------------------------------------------------------------------------------------
# People


@dataclass(frozen=True, slots=True)
class _Special:
    """A person placed on purpose: a login a mapper must handle."""

    unit_path: tuple[str, ...]
    surname: str
    first: str
    patronymic: str
    uid: str
    mail_local: str
    note: str


_ZHKKH_SOUTH = ("Префектура ЮАО", "Управа района Бирюлёво Восточное", "Отдел ЖКХ")
_ZHKKH_CENTRE = ("Префектура ЦАО", "Управа Басманного района", "Отдел ЖКХ")
_IT_COMMA = (
    "Департамент информационных технологий",
    "Управление информационной безопасности",
    NAME_WITH_COMMA,
)
_MFC_QUOTES = (MFC, NAME_WITH_QUOTES)
_SPECIALS = (
    _Special(_ZHKKH_SOUTH, "Смирнов", "Алексей", "Викторович", "smirnov.av", "smirnov.av",
             "Latin login that the Cyrillic смирнов.ав transliterates to"),
    _Special(_ZHKKH_CENTRE, "Смирнов", "Андрей", "Владимирович", "смирнов.ав", "smirnov.av2",
             "Cyrillic login"),
    _Special(_IT_COMMA, "Кузнецов", "Артём", "Васильевич", "kuznetsov.av", "kuznetsov.av",
             "lowercase login that Kuznetsov.AV equals once lowercased"),
    _Special(_ZHKKH_CENTRE, "Кузнецов", "Антон", "Валерьевич", "Kuznetsov.AV", "kuznetsov.av2",
             "uppercase login, same as kuznetsov.av once lowercased"),
    _Special(_MFC_QUOTES, "О'Брайен", "Кевин", "", "o'brien", "obrien",
             "apostrophe in the login, no patronymic"),
    _Special(_ZHKKH_SOUTH, "Иванов", "Илья", "Игоревич", "ivanov.ii", "ivanov.ii", "plain login"),
    _Special(_IT_COMMA, "Иванов", "Игорь", "Ильич", "ivanov ii", "ivanov.ii2",
             "space in the login; ivanov.ii exists"),
    _Special(_MFC_QUOTES, "Лебедев", "Пётр", "Сергеевич", "пётр@mos", "lebedev.ps",
             "Cyrillic and @ in the login"),
    _Special(_ZHKKH_CENTRE, "Петрова", "Анна", "Николаевна", "petrova.an", "petrova.an", "plain login"),
    _Special(_ZHKKH_SOUTH, "Петрова", "Алина", "Николаевна", "petrova.an2", "petrova.an2",
             "numeric suffix an admin gave on a surname+initials clash"),
)  # fmt: skip


def _find(tree: _TreeBuilder, path: tuple[str, ...]) -> _Unit | None:
    unit: _Unit | None = tree.root
    for name in path:
        unit = unit.children.get(name) if unit is not None else None
    return unit


def _b64_needed(value: str) -> bool:
    # RFC 2849 SAFE-STRING: ASCII without NUL/CR/LF, not starting with space, ':' or '<'; a trailing space is
    # encoded too because many tools strip it.
    if not value:
        return False
    if value[0] in " :<" or value[-1] == " ":
        return True
    return not value.isascii() or any(c in value for c in "\0\r\n")


def _line(attr: str, value: str) -> str:
    if _b64_needed(value):
        return f"{attr}:: {base64.b64encode(value.encode()).decode()}\n"
    return f"{attr}: {value}\n"


def _render(entry: LdifEntry) -> str:
    parts = [_line("dn", entry.dn)]
    for attr, values in entry.attributes:
        parts.extend(_line(attr, v) for v in values)
    parts.append("\n")
    return "".join(parts)


def _entry(dn: str, *attrs: tuple[str, str | Iterable[str] | None]) -> LdifEntry:
    out: list[tuple[str, tuple[str, ...]]] = []
    for name, value in attrs:
        if value is None:
            continue
        out.append((name, (value,) if isinstance(value, str) else tuple(value)))
    return LdifEntry(dn, tuple(out))


def _mail_domain(base_dn: str) -> str:
    parts = [a.value for rdn in parse_dn(base_dn) for a in rdn if a.type == "dc"]
    return ".".join(parts) or "example.test"


def generate_directory(
    people: int,
    *,
    seed: int = 1,
    base_dn: str = "dc=mos,dc=test",
    big_unit: int | None = None,
    broken: bool = True,
    disabled_fraction: float = 0.01,
) -> SampleDirectory:
    """Generate a city-government directory of ``people`` well-formed persons (plus broken entries if asked).

    ``big_unit`` is the number of direct members of the contact centre (default: max(250, people // 20) from
    500 people up, else people // 3). Deterministic for the same arguments.
    """
    if people < 0:
        raise ValueError(f"people must be >= 0, got {people}")
    if not 0.0 <= disabled_fraction <= 1.0:
        raise ValueError(f"disabled_fraction must be within [0, 1], got {disabled_fraction}")
    if big_unit is None:
        big_unit = max(250, people // 20) if people >= 500 else people // 3
    big_unit = max(0, min(big_unit, people))
    rng = random.Random(seed)
    domain = _mail_domain(base_dn)

    tree = _build_tree(rng, base_dn, people - big_unit)
    placed: dict[int, list[_Special]] = {}
    for planted in _SPECIALS:
        target = _find(tree, planted.unit_path)
        assert target is not None, planted.unit_path  # the core paths contain every special's unit
        placed.setdefault(target.index, []).append(planted)
    for unit in tree.units:
        unit.mins = 1 + len(placed.get(unit.index, ()))
    big = next(u for u in tree.units if u.kind == "big")
    big.size = big_unit
    others = [u for u in tree.units if u.kind != "big"]
    _fit(others, people - big_unit)

    used: set[str] = {s.uid.lower() for s in _SPECIALS}
    surnames = list(_MALE_SURNAMES) + list(_HYPHENATED)
    hyphen_every = 97  # a few hyphenated surnames, as in life

    entries: list[LdifEntry] = [
        _entry(
            base_dn,
            ("objectClass", ("top", "dcObject", "organization")),
            ("dc", parse_dn(base_dn)[0][0].value),
            ("o", "Правительство Москвы"),
            ("entryUUID", entry_uuid(seed, "base", 0)),
        )
    ]
    service_dn = f"{SERVICE_RDN},{base_dn}"
    service_password = f"provisioner-{seed}"
    entries.append(
        _entry(
            service_dn,
            ("objectClass", ("organizationalRole", "simpleSecurityObject")),
            ("cn", "provisioner"),
            ("description", "Сервисная учётная запись синхронизации мессенджера"),
            ("userPassword", service_password),
            ("entryUUID", entry_uuid(seed, "base", 1)),
        )
    )
    for unit in tree.units:
        entries.append(
            _entry(
                unit.dn,
                ("objectClass", ("top", "organizationalUnit")),
                ("ou", unit.name),
                ("entryUUID", entry_uuid(seed, "unit", unit.index)),
            )
        )

    person_entries: list[LdifEntry] = []
    specials_out: list[SamplePerson] = []
    samples: list[SamplePerson] = []
    disabled_count = round(people * disabled_fraction)
    index = 0
    for unit in tree.units:
        specials = placed.get(unit.index, [])
        for slot in range(unit.size):
            special = specials[slot - 1] if 1 <= slot <= len(specials) else None
            if special is not None:
                surname, first, patronymic = special.surname, special.first, special.patronymic
                uid = special.uid
                mail_local = special.mail_local
            else:
                female = rng.random() < 0.58
                if index % hyphen_every == hyphen_every - 1:
                    male_surname = rng.choice(_HYPHENATED)
                else:
                    male_surname = rng.choice(surnames)
                first_m = rng.choice(_MALE_NAMES)[0]
                _, father_m, father_f = rng.choice(_MALE_NAMES)
                if female:
                    surname, first, patronymic = (
                        female_surname(male_surname),
                        rng.choice(_FEMALE_NAMES),
                        father_f,
                    )
                else:
                    surname, first, patronymic = male_surname, first_m, father_m
                stem = f"{transliterate(surname)}.{transliterate(first)[0]}{transliterate(patronymic)[0]}"
                uid, n = stem, 1
                while uid in used:
                    n += 1
                    uid = f"{stem}{n}"
                used.add(uid)
                mail_local = uid
            given = f"{first} {patronymic}".strip()
            full = f"{surname} {given}"
            kind = unit.kind
            if slot == 0:
                title = _HEAD_TITLE.get(kind, "Начальник отдела")
                if kind == "uprava" and unit.name.startswith("Администрация"):
                    title = "Глава администрации поселения"
            elif slot <= (2 if unit.size >= 12 else 1 if unit.size >= 6 else 0) and kind in _DEPUTY_TITLE:
                title = _DEPUTY_TITLE[kind]
            else:
                title = rng.choice(_STAFF_TITLES.get(kind, _CIVIL))
            dn = f"{_rdn('uid', uid)},{unit.dn}"
            manager = unit.head_dn if slot else _nearest_head(unit.parent)
            anchor = entry_uuid(seed, "person", index)
            if slot == 0:
                unit.head_dn = dn
                if len(samples) < 3:
                    samples.append(SamplePerson(uid, full, dn, anchor, title, "unit head"))
            phone = f"+7 495 {rng.randint(100, 999)}-{rng.randint(0, 99):02d}-{rng.randint(0, 99):02d}"
            person_entries.append(
                _entry(
                    dn,
                    ("objectClass", ("top", "person", "organizationalPerson", "inetOrgPerson")),
                    ("uid", uid),
                    ("cn", full),
                    ("sn", surname),
                    ("givenName", given),
                    ("displayName", full),
                    ("title", title),
                    ("telephoneNumber", phone),
                    ("mail", f"{mail_local}@{domain}"),
                    ("manager", manager),
                    ("entryUUID", anchor),
                )
            )
            if special is not None:
                specials_out.append(SamplePerson(uid, full, dn, anchor, title, special.note))
            index += 1

    # Disabled people are chosen among non-heads so every unit keeps a working moderator.
    head_dns = {u.head_dn for u in tree.units if u.head_dn}
    special_dns = {s.dn for s in specials_out}
    candidates = [i for i, e in enumerate(person_entries) if e.dn not in head_dns and e.dn not in special_dns]
    disabled_idx = set(rng.sample(candidates, min(disabled_count, len(candidates))))
    for i in sorted(disabled_idx):
        e = person_entries[i]
        person_entries[i] = LdifEntry(e.dn, (*e.attributes, ("employeeType", ("disabled",))))
    entries.extend(person_entries)

    broken_out: list[BrokenEntry] = []
    if broken:
        broken_out = _broken_entries(tree, seed, base_dn, domain, entries)

    samples += [p for p in specials_out if p.uid in ("ivanov.ii", "petrova.an", "kuznetsov.av")]
    unit_records = tuple(
        SampleUnit(u.dn, u.name, u.parent.dn if u.parent else base_dn, u.depth, u.size) for u in tree.units
    )
    return SampleDirectory(
        base_dn=base_dn,
        seed=seed,
        entries=tuple(entries),
        units=unit_records,
        people=len(person_entries),
        disabled=len(disabled_idx),
        big_unit_dn=big.dn,
        largest_unit=max((u.size for u in tree.units), default=0),
        max_depth=max((u.depth for u in tree.units), default=0),
        broken=tuple(broken_out),
        special=tuple(specials_out),
        samples=tuple(samples),
        service_dn=service_dn,
        service_password=service_password,
    )


def _nearest_head(unit: _Unit | None) -> str | None:
    while unit is not None:
        if unit.head_dn:
            return unit.head_dn
        unit = unit.parent
    return None


def _broken_entries(
    tree: _TreeBuilder, seed: int, base_dn: str, domain: str, entries: list[LdifEntry]
) -> list[BrokenEntry]:
    unit = _find(tree, _IT_COMMA)
    other = _find(tree, _ZHKKH_CENTRE)
    assert unit is not None and other is not None
    person = ("objectClass", ("top", "person", "organizationalPerson", "inetOrgPerson"))
    out: list[BrokenEntry] = []

    def add(entry: LdifEntry, reason: str) -> None:
        entries.append(entry)
        out.append(BrokenEntry(entry.dn, reason))

    name = "Безлогинов Пётр Сергеевич"
    add(
        _entry(f"{_rdn('cn', name)},{unit.dn}", person, ("cn", name), ("sn", "Безлогинов"),
               ("givenName", "Пётр Сергеевич"), ("displayName", name), ("title", "Главный специалист"),
               ("entryUUID", entry_uuid(seed, "broken", 0))),
        "no uid",
    )  # fmt: skip
    # LDAP refuses empty values but slapd keeps values made only of spaces; every name attribute is blank.
    add(
        _entry(f"{_rdn('uid', 'pustoe.imya')},{unit.dn}", person, ("uid", "pustoe.imya"), ("cn", "   "),
               ("sn", " "), ("displayName", "   "), ("mail", f"pustoe.imya@{domain}"),
               ("entryUUID", entry_uuid(seed, "broken", 1))),
        "displayName, cn and sn are whitespace only",
    )  # fmt: skip
    # An import script pasted a job description into every name attribute: no fallback (cn, "sn givenName")
    # rescues it, so any reader policy must skip it.
    long_name = (
        "Сидорова Мария Ивановна " + "(временно исполняющая обязанности начальника отдела) " * 6
    ).strip()
    add(
        _entry(f"{_rdn('uid', 'sidorova.mi.dlinnoe')},{other.dn}", person, ("uid", "sidorova.mi.dlinnoe"),
               ("cn", long_name), ("sn", long_name), ("displayName", long_name),
               ("entryUUID", entry_uuid(seed, "broken", 2))),
        f"displayName, cn and sn are {len(long_name)} characters long",
    )  # fmt: skip
    shared = entry_uuid(seed, "broken", 3)
    for n, (u, surname, given) in enumerate(
        ((unit, "Дублев", "Олег Олегович"), (other, "Дублева", "Ольга Олеговна")), 1
    ):
        login = f"dublev.uuid{n}"
        add(
            _entry(f"{_rdn('uid', login)},{u.dn}", person, ("uid", login), ("cn", f"{surname} {given}"),
                   ("sn", surname), ("givenName", given), ("displayName", f"{surname} {given}"),
                   ("entryUUID", shared)),
            f"entryUUID {shared} shared by two entries",
        )  # fmt: skip
    add(
        _entry(f"{_rdn('uid', 'bez.otdela')},{base_dn}", person, ("uid", "bez.otdela"),
               ("cn", "Безотделов Иван Петрович"), ("sn", "Безотделов"), ("givenName", "Иван Петрович"),
               ("displayName", "Безотделов Иван Петрович"), ("entryUUID", entry_uuid(seed, "broken", 4))),
        "directly under the base DN, in no unit",
    )  # fmt: skip
    return out


def write_ldif(
    path: str | Path,
    people: int,
    *,
    seed: int = 1,
    base_dn: str = "dc=mos,dc=test",
    big_unit: int | None = None,
    broken: bool = True,
    disabled_fraction: float = 0.01,
) -> SampleDirectory:
    """Generate a directory (arguments as :func:`generate_directory`) and write it to ``path`` as LDIF."""
    directory = generate_directory(
        people,
        seed=seed,
        base_dn=base_dn,
        big_unit=big_unit,
        broken=broken,
        disabled_fraction=disabled_fraction,
    )
    Path(path).write_text(directory.to_ldif(), encoding="utf-8")
    return directory
