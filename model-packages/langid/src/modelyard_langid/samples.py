"""Hand-written test texts for the build-time check and the tests.

``SENTENCES`` holds the same ten sentences in each of the pipeline's seven languages; ``SNIPPETS``
holds 2-4-word fragments (langid is weak on those); ``EDGE_CASES`` stresses the byte DFA (empty,
other scripts, long and odd inputs). Labels are ISO 639-1 codes.
"""

from __future__ import annotations

__all__ = ["EDGE_CASES", "SENTENCES", "SNIPPETS", "all_texts"]

SENTENCES: dict[str, list[str]] = {
    "en": [
        "I love this new phone, the battery lasts two days.",
        "This restaurant is horrible and the service was very slow.",
        "The museum will be closed tomorrow because of the strike.",
        "We walked along the river until the sun went down.",
        "My brother bought a red car last week.",
        "The meeting has been moved to Thursday afternoon.",
        "Please send me the report before Friday.",
        "The children are playing in the garden with the dog.",
        "It rained all day, so we stayed at home and read books.",
        "The hotel was clean, but the breakfast was disappointing.",
    ],
    "es": [
        "Me encanta este teléfono nuevo, la batería dura dos días.",
        "Este restaurante es horrible y el servicio fue muy lento.",
        "El museo estará cerrado mañana por la huelga.",
        "Caminamos junto al río hasta que se puso el sol.",
        "Mi hermano compró un coche rojo la semana pasada.",
        "La reunión se ha trasladado al jueves por la tarde.",
        "Por favor, envíame el informe antes del viernes.",
        "Los niños están jugando en el jardín con el perro.",
        "Llovió todo el día, así que nos quedamos en casa leyendo libros.",
        "El hotel estaba limpio, pero el desayuno fue decepcionante.",
    ],
    "ca": [
        "M'encanta aquest telèfon nou, la bateria dura dos dies.",
        "Aquest restaurant és horrible i el servei va ser molt lent.",
        "El museu estarà tancat demà per la vaga.",
        "Vam caminar al costat del riu fins que es va pondre el sol.",
        "El meu germà va comprar un cotxe vermell la setmana passada.",
        "La reunió s'ha traslladat a dijous a la tarda.",
        "Si us plau, envia'm l'informe abans de divendres.",
        "Els nens estan jugant al jardí amb el gos.",
        "Va ploure tot el dia, així que ens vam quedar a casa llegint llibres.",
        "L'hotel era net, però l'esmorzar va ser decebedor.",
    ],
    "fr": [
        "J'adore ce nouveau téléphone, la batterie dure deux jours.",
        "Ce restaurant est horrible et le service était très lent.",
        "Le musée sera fermé demain à cause de la grève.",
        "Nous avons marché le long de la rivière jusqu'au coucher du soleil.",
        "Mon frère a acheté une voiture rouge la semaine dernière.",
        "La réunion a été déplacée à jeudi après-midi.",
        "Envoyez-moi le rapport avant vendredi, s'il vous plaît.",
        "Les enfants jouent dans le jardin avec le chien.",
        "Il a plu toute la journée, alors nous sommes restés à la maison à lire.",
        "L'hôtel était propre, mais le petit-déjeuner était décevant.",
    ],
    "pt": [
        "Adoro este telefone novo, a bateria dura dois dias.",
        "Este restaurante é horrível e o serviço foi muito lento.",
        "O museu estará fechado amanhã por causa da greve.",
        "Caminhámos ao longo do rio até o sol se pôr.",
        "O meu irmão comprou um carro vermelho na semana passada.",
        "A reunião foi adiada para quinta-feira à tarde.",
        "Por favor, envie-me o relatório antes de sexta-feira.",
        "As crianças estão a brincar no jardim com o cão.",
        "Choveu o dia todo, por isso ficámos em casa a ler livros.",
        "O hotel estava limpo, mas o pequeno-almoço foi dececionante.",
    ],
    "it": [
        "Adoro questo telefono nuovo, la batteria dura due giorni.",
        "Questo ristorante è orribile e il servizio è stato molto lento.",
        "Il museo sarà chiuso domani a causa dello sciopero.",
        "Abbiamo camminato lungo il fiume fino al tramonto.",
        "Mio fratello ha comprato una macchina rossa la settimana scorsa.",
        "La riunione è stata spostata a giovedì pomeriggio.",
        "Per favore, mandami il rapporto prima di venerdì.",
        "I bambini stanno giocando in giardino con il cane.",
        "Ha piovuto tutto il giorno, quindi siamo rimasti a casa a leggere libri.",
        "L'albergo era pulito, ma la colazione è stata deludente.",
    ],
    "de": [
        "Ich liebe dieses neue Telefon, der Akku hält zwei Tage.",
        "Dieses Restaurant ist schrecklich und der Service war sehr langsam.",
        "Das Museum bleibt morgen wegen des Streiks geschlossen.",
        "Wir sind am Fluss entlang gelaufen, bis die Sonne unterging.",
        "Mein Bruder hat letzte Woche ein rotes Auto gekauft.",
        "Die Besprechung wurde auf Donnerstagnachmittag verschoben.",
        "Bitte schicken Sie mir den Bericht vor Freitag.",
        "Die Kinder spielen mit dem Hund im Garten.",
        "Es hat den ganzen Tag geregnet, also sind wir zu Hause geblieben und haben gelesen.",
        "Das Hotel war sauber, aber das Frühstück war enttäuschend.",
    ],
}

SNIPPETS: dict[str, list[str]] = {
    "en": ["good morning", "open the door", "thank you very much", "where is the station"],
    "es": ["buenos días", "abre la puerta", "muchas gracias", "dónde está la estación"],
    "ca": ["bon dia", "obre la porta", "moltes gràcies", "on és l'estació"],
    "fr": ["bonjour", "ouvre la porte", "merci beaucoup", "où est la gare"],
    "pt": ["bom dia", "abre a porta", "muito obrigado", "onde fica a estação"],
    "it": ["buongiorno", "apri la porta", "grazie mille", "dov'è la stazione"],
    "de": ["guten Morgen", "mach die Tür auf", "vielen Dank", "wo ist der Bahnhof"],
}

EDGE_CASES: list[str] = [
    "",
    " ",
    "a",
    "12345 67890",
    "日本語のテキストです",
    "这是一个中文句子。",
    "Привет, как дела?",
    "Γειά σου κόσμε",  # noqa: RUF001  # Greek on purpose: another script for the DFA
    "مرحبا بالعالم",
    "שלום עולם",
    "नमस्ते दुनिया",
    "😀😀 👍",
    "tab\tand\nnewline",
    "NUL\x00inside",
    "ALL CAPS SHOUTING TEXT HERE",
    "http://example.com/path?x=1&y=2",
    "The quick brown fox jumps over the lazy dog. " * 7,
    "Ça va? Très bien, merci! Straße, Ñandú, açaí, œuvre.",
]


def all_texts() -> list[str]:
    """Every sample, sentences first, in a fixed order."""
    out = [s for lang in sorted(SENTENCES) for s in SENTENCES[lang]]
    out += [s for lang in sorted(SNIPPETS) for s in SNIPPETS[lang]]
    return out + EDGE_CASES
