"""A small parallel corpus: the same ten sentences in seven languages, each with a clear sentiment.

Shared by every stage's tests: OCR renders it, language ID must name the language, translation
maps it to English and sentiment must find the polarity in ``SENTIMENT`` (same index in every
language). The sentences avoid characters the PP-OCRv6 dictionaries lack (only ``¡``).
"""

from __future__ import annotations

from typing import Literal

__all__ = ["CORPUS", "LANGUAGES", "SENTIMENT"]

LANGUAGES: tuple[str, ...] = ("en", "es", "ca", "fr", "pt", "it", "de")

SENTIMENT: tuple[Literal["positive", "negative"], ...] = (
    "negative",
    "positive",
    "positive",
    "negative",
    "positive",
    "negative",
    "positive",
    "negative",
    "positive",
    "negative",
)

CORPUS: dict[str, list[str]] = {
    "en": [
        "This restaurant is horrible and the service was very slow.",
        "The hotel room was clean, quiet and comfortable.",
        "I love this book; the story is wonderful.",
        "The train was late again and nobody told us why.",
        "Our new teacher is kind, patient and very funny.",
        "The museum was boring and far too expensive.",
        "The concert last night was fantastic and everyone was happy.",
        "This phone broke after two days and the shop refused to help.",
        "Thank you for the delicious dinner and the lovely evening.",
        "The weather is terrible today and I feel sad.",
    ],
    "es": [
        "Este restaurante es horrible y el servicio fue muy lento.",
        "La habitación del hotel estaba limpia, tranquila y cómoda.",
        "Me encanta este libro; la historia es maravillosa.",
        "El tren llegó tarde otra vez y nadie nos dijo por qué.",
        "Nuestro nuevo profesor es amable, paciente y muy divertido.",
        "El museo era aburrido y demasiado caro.",
        "El concierto de anoche fue fantástico y todos estaban contentos.",
        "Este teléfono se rompió a los dos días y la tienda se negó a ayudar.",
        "Gracias por la deliciosa cena y la encantadora velada.",
        "Hoy hace un tiempo terrible y me siento triste.",
    ],
    "ca": [
        "Aquest restaurant és horrible i el servei va ser molt lent.",
        "L'habitació de l'hotel era neta, tranquil·la i còmoda.",
        "M'encanta aquest llibre; la història és meravellosa.",
        "El tren va tornar a arribar tard i ningú ens va dir per què.",
        "El nostre nou professor és amable, pacient i molt divertit.",
        "El museu era avorrit i massa car.",
        "El concert d'ahir a la nit va ser fantàstic i tothom estava content.",
        "Aquest telèfon es va espatllar al cap de dos dies i la botiga no ens va voler ajudar.",
        "Gràcies pel sopar deliciós i la vetllada tan agradable.",
        "Avui fa un temps horrible i em sento trist.",
    ],
    "fr": [
        "Ce restaurant est horrible et le service était très lent.",
        "La chambre d'hôtel était propre, calme et confortable.",
        "J'adore ce livre ; l'histoire est merveilleuse.",
        "Le train était encore en retard et personne ne nous a dit pourquoi.",
        "Notre nouveau professeur est gentil, patient et très drôle.",
        "Le musée était ennuyeux et beaucoup trop cher.",
        "Le concert d'hier soir était fantastique et tout le monde était heureux.",
        "Ce téléphone est tombé en panne au bout de deux jours "
        "et le magasin a refusé de nous aider.",
        "Merci pour ce délicieux dîner et cette charmante soirée.",
        "Il fait un temps affreux aujourd'hui et je suis triste.",
    ],
    "pt": [
        "Este restaurante é horrível e o serviço foi muito lento.",
        "O quarto do hotel estava limpo, tranquilo e confortável.",
        "Eu adoro este livro; a história é maravilhosa.",
        "O trem atrasou de novo e ninguém nos disse por quê.",
        "O nosso novo professor é gentil, paciente e muito engraçado.",
        "O museu era chato e caro demais.",
        "O show de ontem à noite foi fantástico e todos estavam felizes.",
        "Este telefone quebrou depois de dois dias e a loja se recusou a ajudar.",
        "Obrigado pelo jantar delicioso e pela noite tão agradável.",
        "O tempo está horrível hoje e eu me sinto triste.",
    ],
    "it": [
        "Questo ristorante è orribile e il servizio era molto lento.",
        "La camera d'albergo era pulita, tranquilla e comoda.",
        "Adoro questo libro; la storia è meravigliosa.",
        "Il treno era di nuovo in ritardo e nessuno ci ha detto perché.",
        "Il nostro nuovo insegnante è gentile, paziente e molto divertente.",
        "Il museo era noioso e troppo caro.",
        "Il concerto di ieri sera è stato fantastico e tutti erano felici.",
        "Questo telefono si è rotto dopo due giorni e il negozio si è rifiutato di aiutarci.",
        "Grazie per la cena deliziosa e la bellissima serata.",
        "Oggi il tempo è terribile e mi sento triste.",
    ],
    "de": [
        "Dieses Restaurant ist schrecklich und der Service war sehr langsam.",
        "Das Hotelzimmer war sauber, ruhig und bequem.",
        "Ich liebe dieses Buch; die Geschichte ist wunderbar.",
        "Der Zug hatte wieder Verspätung und niemand sagte uns, warum.",
        "Unser neuer Lehrer ist freundlich, geduldig und sehr lustig.",
        "Das Museum war langweilig und viel zu teuer.",
        "Das Konzert gestern Abend war fantastisch und alle waren glücklich.",
        "Dieses Handy ging nach zwei Tagen kaputt und der Laden weigerte sich, uns zu helfen.",
        "Danke für das köstliche Essen und den wunderschönen Abend.",
        "Das Wetter ist heute furchtbar und ich bin traurig.",
    ],
}
