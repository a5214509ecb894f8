"""Writes the bundled IMDB-shaped sample, data/imdb-sample/{train,test}.parquet (chapter 7).

The sentences below were written for this crate: short, clearly positive or clearly negative
movie-review sentences about acting, plot, music, pacing, camerawork and so on. None comes from
IMDB or from any other dataset. They are stored in the schema of the Hub dataset
`stanfordnlp/imdb` (config `plain_text`, files `plain_text/train-00000-of-00001.parquet` and
`plain_text/test-00000-of-00001.parquet`): a column `text` (string) and a column `label`
(int64, 0 = neg, 1 = pos), so that the same reading code serves both. The schema carries the
`huggingface` metadata `datasets` writes (label as ClassLabel, names ["neg", "pos"]).

Each split is balanced: of the 160 positive and 160 negative sentences, the first 120 of each go
to train and the last 40 of each to test. Each split's rows are then shuffled with a fixed seed,
so labels alternate irregularly. The files are written with pyarrow, snappy compression (as the
Hub's are), and two runs write the same bytes.

The tutorial's test sentence "I hate this movie!" is deliberately not in the sample (asserted).

Run from the repository root:  python scripts/reference/make_imdb_sample.py
"""

import argparse
import hashlib
import json
import pathlib
import random

import pyarrow as pa
import pyarrow.parquet as pq

SEED = 20240607
TRAIN_PER_LABEL = 120
TEST_PER_LABEL = 40
MIN_WORDS, MAX_WORDS = 8, 40
EXCLUDED = ["I hate this movie!", "I love this movie!"]  # the tutorial's test sentence; the positive probe

POSITIVE = [
    "The lead actress gives a warm, funny performance that carries every scene she is in.",
    "A gorgeous score and patient camerawork make this quiet drama a real pleasure to watch.",
    "I laughed from the opening scene to the final credits; the jokes land again and again.",
    "The plot twists are earned, the dialogue is sharp, and the ending left me grinning.",
    "Beautifully shot and tightly edited, this thriller kept me on the edge of my seat.",
    "Every member of the cast seems to be having a wonderful time, and it shows.",
    "A moving story about two brothers, told with honesty and remarkable restraint.",
    "The animation is dazzling and the songs are so catchy that I hummed them all week.",
    "This is the rare sequel that improves on the original in every possible way.",
    "Smart, tender and surprisingly funny, it is one of the best films I have seen this year.",
    "The director balances humor and heartbreak with a confidence that few newcomers have.",
    "An absolute delight from start to finish, with a villain who is enormous fun to watch.",
    "The chemistry between the two leads is electric, and their final scene together is perfect.",
    "I went in with low expectations and came out thoroughly charmed.",
    "The pacing is brisk, the stakes feel real, and the action scenes are thrillingly clear.",
    "A haunting, lovely film whose images stayed with me long after I left the theater.",
    "The screenplay trusts its audience, and the payoff in the last act is deeply satisfying.",
    "Wonderful performances all around, especially from the young boy who plays the son.",
    "Clever, stylish and full of heart, this comedy deserves a much bigger audience.",
    "The cinematography alone is worth the ticket, but the story is just as strong.",
    "I cried twice and laughed a dozen times; what more could you ask for?",
    "A gripping courtroom drama with a superb central performance and crackling dialogue.",
    "The music swells at exactly the right moments and never feels manipulative.",
    "It is a small, modest film, but it is made with such care that it feels enormous.",
    "Funny, warm and wise, this family comedy works for kids and grown-ups alike.",
    "The battle sequences are breathtaking, and the quieter moments between them are just as good.",
    "An inventive, playful script that keeps surprising you right up to the last line.",
    "Her performance as the grieving mother is devastating and utterly convincing.",
    "I have already watched it three times and I notice something new every time.",
    "A superb ensemble cast brings this sprawling family saga vividly to life.",
    "The horror works because the characters are likeable and the scares are patiently built.",
    "Gentle, funny and full of lovely small details, this is a film to treasure.",
    "The editing is razor sharp and not a single minute of the running time is wasted.",
    "A triumphant return to form for the director, bold and confident in every frame.",
    "The costumes and sets are gorgeous, and the performances match their splendor.",
    "This documentary is fascinating, informative and often very moving.",
    "The final twist caught me completely off guard, and it made perfect sense in hindsight.",
    "Charming, romantic and genuinely witty, it is the best date movie in years.",
    "The soundtrack is fantastic and the dance numbers are a joy to watch.",
    "A beautifully acted character study that never once strikes a false note.",
    "Thoughtful science fiction with big ideas, real emotions and stunning visual effects.",
    "The comic timing of the supporting cast is impeccable; every line is a gem.",
    "Tense, clever and superbly acted, this heist film is pure entertainment.",
    "I loved how the story takes its time and lets the characters breathe.",
    "An uplifting sports drama that made the whole audience cheer at the end.",
    "The writing is so good that even the minor characters feel like real people.",
    "A visually stunning adventure with a story that is every bit as rich as its images.",
    "The performances are natural and the dialogue sounds like the way people actually talk.",
    "This western is rugged, beautiful and far more emotional than I expected.",
    "A wonderfully strange little film that I cannot stop thinking about.",
    "The two comedians play off each other brilliantly and the film is hilarious.",
    "It takes a familiar premise and makes it feel fresh, exciting and new.",
    "Magnificent, moving and wonderfully acted, a true masterpiece of the genre.",
    "The mystery unfolds at a perfect pace, with clues fairly laid out for the viewer.",
    "I was captivated by the lead's quiet, intelligent performance as a retired teacher.",
    "A joyful musical with memorable songs and choreography that takes your breath away.",
    "The film handles a difficult subject with grace, humor and enormous compassion.",
    "Great fun from beginning to end, with a script full of quotable lines.",
    "The lighting and color in every shot are simply gorgeous.",
    "A heartfelt coming-of-age story that captures the awkwardness of being sixteen perfectly.",
    "The villain is genuinely menacing, which makes the hero's victory all the sweeter.",
    "Sharp satire that is both very funny and surprisingly angry about the right things.",
    "A brilliant thriller that never cheats and never lets up for a second.",
    "The actors clearly loved this material, and their enthusiasm is contagious.",
    "Rich, layered storytelling with an ending that is both surprising and inevitable.",
    "The war scenes are harrowing, and the film honors its soldiers without glorifying war.",
    "Delightful from the first frame; I smiled through the entire movie.",
    "The young cast is terrific and the script treats teenagers with real respect.",
    "A slow burn that rewards patience with one of the most powerful finales I have seen.",
    "The animation studio has outdone itself; this is visually and emotionally stunning.",
    "Every song on the soundtrack fits the mood of its scene perfectly.",
    "It is thrilling, romantic and funny, an old-fashioned crowd pleaser done right.",
    "The screenplay is tight, witty and constantly inventive.",
    "A moving portrait of friendship that feels honest and never sentimental.",
    "I left the cinema feeling happier than when I went in.",
    "The detective is a wonderful creation, and I hope we see much more of her.",
    "Superb production design transports you straight into another century.",
    "The movie is short, sweet and perfectly formed, and it does not overstay its welcome.",
    "A gripping survival story with an astonishing performance at its center.",
    "Witty banter, lovable characters and a warm heart make this an easy recommendation.",
    "This is filmmaking of the highest order, precise and deeply felt.",
    "The chase through the city streets is one of the best action scenes in years.",
    "Quietly devastating and beautifully observed, a film of real emotional depth.",
    "The ensemble has wonderful chemistry, and the jokes keep coming at a cracking pace.",
    "An intelligent, adult drama that takes its characters' choices seriously.",
    "The score is lush and memorable, and it lifts every emotional moment.",
    "I adored the quirky humor and the affectionate way it treats its oddball heroes.",
    "Stylish, suspenseful and superbly made, it is a real treat for thriller fans.",
    "A powerful true story told with clarity, dignity and great skill.",
    "The fantasy world is so richly imagined that I wanted to stay there for hours.",
    "A terrific debut from a director with a distinctive and confident voice.",
    "The emotional climax is earned through careful, patient character work.",
    "Exciting, colorful and full of invention, my whole family loved it.",
    "The lead actor is magnetic and holds the screen effortlessly, even in silence.",
    "A lovely, wistful romance that feels both timeless and very modern.",
    "The comedy is smart rather than crude, and it is all the funnier for it.",
    "The film builds its dread slowly and then delivers a truly terrifying final act.",
    "Every frame looks like a painting, and the story is just as graceful.",
    "A genuinely inspiring film about a rural nurse that never feels preachy.",
    "The dialogue crackles and the performances are pitch perfect.",
    "Fresh, funny and full of surprises, it is an absolute winner.",
    "This biopic captures both the genius and the flaws of its subject wonderfully.",
    "The plot is intricate but always easy to follow, which is a real achievement.",
    "I was moved to tears by the final scene between the father and his daughter.",
    "The practical effects look fantastic and give the monster a real physical presence.",
    "A smart, fast and endlessly entertaining spy caper set in snowy Vienna.",
    "The supporting actors steal every scene, and the film is richer for it.",
    "It is a warm hug of a movie, kind and funny and full of hope.",
    "The story is simple, but the execution is flawless from the first shot to the last.",
    "Gorgeous landscapes, a sweeping score and a love story that really works.",
    "A brilliant script packed with clever ideas and unforgettable characters.",
    "The tension in the final half hour is almost unbearable, in the best way.",
    "One of the funniest films I have ever seen; the theater was roaring with laughter.",
    "The film's gentle rhythm and lovely performances won me over completely.",
    "An ambitious epic that fully delivers on its promise.",
    "The whole cast is excellent, but the grandmother is the real scene stealer.",
    "Haunting music and striking images make this ghost story unforgettable.",
    "Crisp direction and a lively script make the two hours fly by.",
    "A tender, wise and wonderfully acted film about growing old.",
    "The heist itself is a masterpiece of suspense and clockwork plotting.",
    "This is an exhilarating ride that I would happily take again tomorrow.",
    "The movie is packed with heart, humor and truly spectacular set pieces.",
    "An honest, moving and beautifully written drama about a marriage in trouble.",
    "The lead's transformation over the course of the film is astonishing.",
    "A bright, bouncy comedy that had me laughing out loud on the bus home just remembering it.",
    "The ending is perfect: hopeful without being sugary.",
    "Brilliantly paced, the film never drags and never rushes.",
    "The voice acting is superb and the characters are instantly lovable.",
    "I was hooked from the first scene and could not look away.",
    "Elegant, intelligent and emotionally rich, a film for grown-ups.",
    "The courtroom scenes crackle with energy and the verdict hits hard.",
    "It is a wonderful showcase for a gifted young actress in her first starring role.",
    "A thrilling, heartfelt adventure that reminded me why I love going to the movies.",
    "The film's humor is gentle and its heart is enormous.",
    "Clever camerawork turns a single apartment into a gripping, claustrophobic world.",
    "The story flows naturally and the performances feel completely genuine.",
    "A beautifully made period drama with a fierce and brilliant heroine.",
    "Every twist in the plot adds to the characters instead of cheating them.",
    "The soundtrack is a perfect mix of old favorites and moving original songs.",
    "Simply magical; my kids begged to watch it again the moment it ended.",
    "The action is inventive and the banter between the partners is genuinely witty.",
    "This is a confident, beautifully crafted film with a lot to say.",
    "The slow, careful build makes the emotional payoff overwhelming.",
    "A sparkling romantic comedy with two leads who are impossible not to root for.",
    "The documentary's interviews are candid, funny and often heartbreaking.",
    "The acting is superb across the board, and the script gives everyone something to do.",
    "A stunning achievement in sound design; the silence is as powerful as the noise.",
    "It is rare for a comedy to be this clever and this kind at the same time.",
    "I found the film thoughtful, gripping and ultimately very uplifting.",
    "The story kept me guessing until the very end, and the reveal was worth the wait.",
    "Terrific fun, with bright colors, big laughs and a sweet message.",
    "A masterful thriller whose final scene left the whole audience gasping.",
    "The film captures the magic of childhood with warmth and wit.",
    "Strong performances and an intelligent script make this drama a must see.",
    "The monster movie I have been waiting for: scary, funny and gloriously made.",
    "A lovely, understated film that rewards close attention.",
    "The humor is sharp, the pace is quick and the cast is fantastic.",
    "An emotional, uplifting story anchored by a truly great lead performance.",
    "Exquisitely photographed and wonderfully acted, it is a feast for the eyes.",
    "I would recommend this wonderful film to anyone who loves great storytelling.",
]

NEGATIVE = [
    "The plot makes no sense, and the actors look as bored as I was.",
    "Two hours of my life I will never get back; the pacing is painfully slow.",
    "The dialogue is clumsy and the jokes fall flat one after another.",
    "A loud, messy action film with no story and characters I did not care about.",
    "The lead actor mumbles through every scene and shows no emotion at all.",
    "The twist ending is so obvious that I guessed it in the first ten minutes.",
    "Cheap sets, wooden acting and a script that seems to have been written overnight.",
    "The music is so loud and constant that it drowns out the dialogue.",
    "This sequel takes everything that worked in the original and throws it away.",
    "I walked out halfway through, and I do not regret it for a moment.",
    "The editing is choppy and the action scenes are impossible to follow.",
    "An endless, dull drama that mistakes silence for depth.",
    "The two leads have zero chemistry, which kills the romance completely.",
    "The special effects look unfinished and the monster is laughable instead of scary.",
    "Every character is a cliche, and every scene goes exactly where you expect.",
    "A boring, joyless comedy that never earns a single laugh.",
    "The story drags terribly in the middle and never recovers.",
    "The villain's plan is so stupid that the whole film collapses around it.",
    "I have seen better acting in a school play.",
    "The film is far too long, with at least forty minutes that should have been cut.",
    "The script is lazy and the direction is flat and uninspired.",
    "Painfully unfunny, the jokes rely on shouting and pratfalls.",
    "The horror scenes are just loud noises and cheap jump scares.",
    "A confused, overstuffed mess that tries to do everything and does nothing well.",
    "The ending is rushed and leaves every important question unanswered.",
    "The actors seem embarrassed to be there, and honestly I do not blame them.",
    "The soundtrack is a random collection of pop songs that never fit the scenes.",
    "What should have been a thrilling chase is filmed so darkly that you cannot see anything.",
    "The movie preaches at the audience instead of telling a story.",
    "A tedious, self-important film that confuses being slow with being profound.",
    "The characters make such foolish decisions that I stopped caring whether they survived.",
    "The romance is creepy rather than charming, and the film does not seem to notice.",
    "Flat lighting and lifeless camerawork make even the beautiful locations look dull.",
    "I kept checking my watch; nothing interesting happens for the first hour.",
    "The child actors are annoying and the adults are not much better.",
    "This remake adds nothing new and loses all the charm of the original.",
    "The dialogue is so stilted that every conversation sounds like a reading exercise.",
    "An ugly, mean-spirited comedy that punches down at every opportunity.",
    "The plot holes are big enough to drive a truck through.",
    "The film cannot decide whether it is a comedy or a tragedy, and fails at both.",
    "A forgettable thriller with no suspense and a ridiculous finale on a rooftop.",
    "The lead performance is so over the top that it becomes unintentionally funny.",
    "The animation is cheap and the story is aimed at no one in particular.",
    "I was bored out of my mind from the opening credits to the end.",
    "The fight scenes are clumsy and badly staged, with obvious stunt doubles.",
    "The film wastes a talented cast on a script with nothing to say.",
    "A pretentious, muddled art film that seems designed to frustrate its audience.",
    "The pacing is a disaster: rushed where it should breathe and slow where it should move.",
    "The mystery is solved by a coincidence so lazy that I groaned out loud.",
    "Awful songs, clumsy choreography and a plot thinner than paper.",
    "The characters are so unpleasant that spending time with them is exhausting.",
    "The war scenes are loud but weightless, and the heroics ring completely false.",
    "It is the kind of movie that makes you want to ask for your money back.",
    "The documentary is one-sided, repetitive and badly researched.",
    "The film's message is muddled and its tone is all over the place.",
    "The voice acting is flat and the jokes are aimed at the lowest common denominator.",
    "The director seems more interested in slow motion than in his characters.",
    "Terrible writing sinks what could have been an interesting premise about a lighthouse keeper.",
    "The romance subplot is dull and goes nowhere, yet it takes up half the film.",
    "A cynical cash grab with no heart, no wit and no reason to exist.",
    "The ending is so abrupt that the audience sat there waiting for more.",
    "The performances are stiff and the story never comes to life.",
    "This horror film is about as frightening as a wet paper bag.",
    "The jokes are recycled from better movies and told worse.",
    "A sluggish, confusing thriller that forgets its own rules halfway through.",
    "The costumes look cheap and the accents wander from scene to scene.",
    "Sitting through it was a chore, because the characters never learn or change.",
    "The camera shakes so much during the action that I felt seasick.",
    "The screenplay is packed with clumsy exposition that explains everything twice.",
    "A dreary, humorless slog that even its fine score cannot rescue.",
    "The acting is wooden, the plot is predictable and the ending is a letdown.",
    "It tries so hard to be edgy that it forgets to be entertaining.",
    "The sequel's story is a lazy rehash of the first film with louder explosions.",
    "The hero is so smug and unlikable that I was rooting for the villain.",
    "The movie is full of noise and explosions but completely empty inside.",
    "Nothing about this film works, from the casting to the editing.",
    "The comedy is so crude and mean that I did not laugh once.",
    "Poorly lit, poorly written and poorly acted: a disappointment in every way.",
    "The story is so thin that the film feels padded even at ninety minutes.",
    "The big twist is cheap and undoes everything that came before it.",
    "A lifeless biopic that turns a fascinating person into a dull one.",
    "The characters spend the whole movie explaining their feelings instead of showing them.",
    "The soundtrack is grating and the sound mix makes the dialogue hard to hear.",
    "I found it dull, shallow and instantly forgettable.",
    "The plot is a tangle of loose ends and forgotten subplots.",
    "The lead actress is miscast and looks lost in nearly every scene.",
    "A depressing, pointless film that left me feeling worse than before.",
    "The effects are dated, the script is worse, and the pacing is glacial.",
    "The action is repetitive and the story is nonsense from start to finish.",
    "This is one of the worst films I have sat through in a very long time.",
    "The family comedy is loud, frantic and not funny for kids or adults.",
    "The director clearly had no idea how to end the story.",
    "The romance feels forced and the couple argue in every single scene.",
    "The film treats its audience as if we cannot follow a simple plot.",
    "A clumsy, heavy-handed drama that hammers its message home again and again.",
    "The performances are shrill and the characters are paper thin.",
    "The mystery is dull and the detective is irritating rather than clever.",
    "A muddled fantasy with a confusing world and no sense of wonder.",
    "The opening is promising, but the film falls apart completely after twenty minutes.",
    "Tedious and overlong, it feels like it will never end.",
    "The jokes are stale and the timing of every gag is off.",
    "The screenplay is riddled with cliches and the dialogue is painfully on the nose.",
    "The movie looks cheap, sounds cheap and feels cheap.",
    "I could not connect with a single character in this cold, distant film.",
    "The fight choreography is sloppy and the editing hides nothing.",
    "A dull, plodding western with pretty scenery and nothing else.",
    "The music is cheesy and manipulative, telling you exactly what to feel.",
    "The film squanders a fascinating true story with a bland, timid script.",
    "The plot twists are random and make the earlier scenes meaningless.",
    "An incoherent mess that even the actors seem unable to follow.",
    "The scares never come, and the slow build leads to nothing.",
    "The film is so sentimental that it becomes unbearable by the second act.",
    "Two talented stars are stranded in a witless, charmless comedy.",
    "The movie insults the intelligence of everyone watching it.",
    "The spy plot is convoluted and the stakes never feel real.",
    "It is a lazy, cynical product that feels assembled by a committee.",
    "The teen characters sound nothing like real teenagers, and the humor is dated.",
    "An exhausting film, loud and frantic without ever being exciting.",
    "The courtroom scenes are unrealistic and the verdict is absurd.",
    "The story is predictable from the first scene to the last.",
    "I regret buying a ticket; the film is a complete waste of time.",
    "The cinematography is murky and the story is even murkier.",
    "A hollow, glossy film with nothing under its shiny surface.",
    "The performances range from bland to painfully overacted.",
    "The animation is stiff and the songs are instantly forgettable.",
    "This thriller has all the tension of a grocery list.",
    "The dialogue is awkward, the plot is silly and the ending is a mess.",
    "A disappointing follow-up that feels tired and uninspired.",
    "The film is so busy setting up sequels that it forgets to tell a story.",
    "The characters are thin, the plot is thinner, and the jokes are the thinnest of all.",
    "The villain is bland and his motives are never explained.",
    "A forgettable, by-the-numbers romantic comedy with no spark at all.",
    "The sound design is so loud that the film gave me a headache.",
    "The editing is sloppy, with scenes that end before they have a point.",
    "A cold, clinical film that left me completely unmoved.",
    "The actors shout their lines as if volume could replace emotion.",
    "The horror is gory but never scary, just unpleasant.",
    "The movie is ruined by a silly, unbelievable final act.",
    "A lazy script, bored actors and a director asleep at the wheel.",
    "The film is ugly to look at and even worse to listen to.",
    "The story wanders aimlessly and never finds its purpose.",
    "It is neither funny enough for a comedy nor tense enough for a thriller.",
    "The performances are flat and the emotional scenes feel hollow.",
    "A bloated, joyless epic that runs out of ideas in the first hour.",
    "The plot is ridiculous, and the film takes it far too seriously.",
    "I have rarely been so bored in a cinema.",
    "The musical numbers are badly sung and even worse staged.",
    "The twist makes no sense, and the explanation makes it worse.",
    "The documentary feels like a long, dull advertisement for its director.",
    "A grim, ugly film with no point and no payoff.",
    "The lead character is so irritating that the movie is unbearable.",
    "This comedy confuses shouting with wit and cruelty with humor.",
    "The film is a mess of borrowed ideas and half-finished scenes.",
    "The pacing is so sluggish that the climax arrives with no energy at all.",
    "The adaptation strips the book of everything that made it special.",
    "Stiff acting and a clumsy script make this drama a real slog.",
    "The science fiction ideas are half-baked and the effects look like an old video game.",
    "A dreadful film with nothing to recommend it.",
    "I was disappointed by the weak story and the lifeless performances.",
    "Save your money; this is a dull, badly made movie.",
]


def check(sentences):
    for s in sentences:
        n = len(s.split())
        assert MIN_WORDS <= n <= MAX_WORDS, (n, s)
        assert s == s.strip() and "\n" not in s, s
    texts = [s.lower() for s in sentences]
    assert len(set(texts)) == len(texts), "duplicate sentence"
    for excluded in EXCLUDED:
        assert all(excluded.lower() not in t for t in texts), excluded
    assert all("hate this movie" not in t for t in texts)


def split(sentences, label):
    rows = [{"text": s, "label": label} for s in sentences]
    return rows[:TRAIN_PER_LABEL], rows[TRAIN_PER_LABEL:TRAIN_PER_LABEL + TEST_PER_LABEL]


# The schema metadata `datasets` writes for stanfordnlp/imdb's features, so that `datasets` reads
# `label` back as ClassLabel(names=["neg", "pos"]).
HF_METADATA = {
    b"huggingface": json.dumps(
        {"info": {"features": {"text": {"dtype": "string", "_type": "Value"},
                               "label": {"names": ["neg", "pos"], "_type": "ClassLabel"}}}},
        separators=(",", ":"),
    ).encode()
}


def write(rows, path):
    table = pa.table(
        {"text": pa.array([r["text"] for r in rows], pa.string()),
         "label": pa.array([r["label"] for r in rows], pa.int64())}
    ).replace_schema_metadata(HF_METADATA)
    pq.write_table(table, path, compression="snappy")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=pathlib.Path, default=pathlib.Path("."))
    args = parser.parse_args()
    assert len(POSITIVE) == len(NEGATIVE) == TRAIN_PER_LABEL + TEST_PER_LABEL, (len(POSITIVE), len(NEGATIVE))
    check(POSITIVE + NEGATIVE)
    pos_train, pos_test = split(POSITIVE, 1)
    neg_train, neg_test = split(NEGATIVE, 0)
    rng = random.Random(SEED)
    train = pos_train + neg_train
    test = pos_test + neg_test
    rng.shuffle(train)
    rng.shuffle(test)
    out = args.root / "data/imdb-sample"
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in [("train", train), ("test", test)]:
        path = out / f"{name}.parquet"
        write(rows, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        neg = sum(r["label"] == 0 for r in rows)
        print(f"wrote {path}: {len(rows)} rows ({neg} neg, {len(rows) - neg} pos), sha256 {digest}")


if __name__ == "__main__":
    main()
