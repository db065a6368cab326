"""Write medexp's embedded sample data: medical QA pairs in the MedQuAD schema (qtype/Question/Answer).

Every pair is generated here from a small table of conditions written by the medexp developers and a set of
question types; nothing is copied from an existing dataset. The same table also yields a plain-text corpus of
encyclopedia-style passages, worded differently from the answers, on which `scripts/pretrain_tiny_model.py`
pretrains the embedded tiny model (so it knows the facts, but not the question-answer chat format that LoRA
fine-tuning then teaches).

    python scripts/make_sample_data.py          # rewrites medexp/assets/sample/*
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "medexp" / "assets" / "sample"

# name, body part, three symptoms, cause, test, general treatment, prevention, who is at risk, specialist
CONDITIONS: list[tuple[str, str, tuple[str, str, str], str, str, str, str, str, str]] = [
    (
        "asthma",
        "airways",
        ("wheezing", "shortness of breath", "a tight chest"),
        "inflamed and narrowed airways",
        "a breathing test called spirometry",
        "inhaled medicines that open or calm the airways",
        "avoiding smoke and known triggers",
        "people with allergies or a family history of asthma",
        "a lung specialist",
    ),
    (
        "type 2 diabetes",
        "blood sugar control",
        ("thirst", "frequent urination", "tiredness"),
        "the body not using insulin well",
        "a blood sugar test",
        "healthy eating, physical activity and medicines that lower blood sugar",
        "keeping a healthy weight and staying active",
        "people who are overweight or inactive",
        "an endocrinologist",
    ),
    (
        "high blood pressure",
        "heart and blood vessels",
        ("headaches", "no symptoms at all", "blurred vision"),
        "stiff or narrowed arteries",
        "repeated blood pressure readings",
        "lifestyle changes and medicines that lower blood pressure",
        "eating less salt and staying active",
        "older adults and people with a family history of it",
        "a cardiologist",
    ),
    (
        "migraine",
        "brain and nerves",
        ("a throbbing headache", "sensitivity to light", "nausea"),
        "changes in nerve signals and blood vessels in the brain",
        "a review of symptoms and a neurological exam",
        "rest, pain relief and medicines that prevent attacks",
        "regular sleep and avoiding known triggers",
        "women and people with a family history of migraine",
        "a neurologist",
    ),
    (
        "pneumonia",
        "lungs",
        ("cough", "fever", "trouble breathing"),
        "an infection by bacteria or viruses",
        "a chest X-ray",
        "rest, fluids and medicines chosen for the infection",
        "vaccination and hand washing",
        "young children and older adults",
        "a lung specialist",
    ),
    (
        "anemia",
        "blood",
        ("tiredness", "pale skin", "dizziness"),
        "too few healthy red blood cells",
        "a complete blood count",
        "treating the cause and replacing what the body lacks",
        "a diet with enough iron and vitamins",
        "women with heavy periods and people with poor diets",
        "a hematologist",
    ),
    (
        "osteoarthritis",
        "joints",
        ("joint pain", "stiffness", "reduced movement"),
        "the wearing down of cartilage in the joints",
        "a physical exam and joint X-rays",
        "exercise, weight control and pain relief",
        "staying active and protecting the joints from injury",
        "older adults and people with earlier joint injuries",
        "a rheumatologist",
    ),
    (
        "eczema",
        "skin",
        ("itchy skin", "dry patches", "redness"),
        "a skin barrier that does not hold moisture well",
        "a look at the skin and a review of history",
        "moisturizers and creams that calm inflammation",
        "gentle skin care and avoiding irritants",
        "children and people with allergies",
        "a dermatologist",
    ),
    (
        "gout",
        "joints",
        ("sudden joint pain", "swelling", "red warm skin over a joint"),
        "crystals of uric acid in a joint",
        "a test of fluid from the joint",
        "medicines that ease the attack and lower uric acid",
        "limiting alcohol and certain foods",
        "men and people with kidney problems",
        "a rheumatologist",
    ),
    (
        "hypothyroidism",
        "thyroid gland",
        ("tiredness", "weight gain", "feeling cold"),
        "a thyroid gland that makes too little hormone",
        "a blood test for thyroid hormones",
        "daily thyroid hormone replacement",
        "no sure way, but regular checks find it early",
        "women over sixty",
        "an endocrinologist",
    ),
    (
        "kidney stones",
        "kidneys",
        ("sharp side pain", "blood in the urine", "nausea"),
        "minerals that form hard deposits in the kidney",
        "a urine test and an imaging scan",
        "fluids, pain relief and sometimes a procedure",
        "drinking enough water every day",
        "people who do not drink enough fluids",
        "a urologist",
    ),
    (
        "glaucoma",
        "eyes",
        ("slow loss of side vision", "eye pain", "halos around lights"),
        "damage to the nerve at the back of the eye",
        "an eye exam that measures eye pressure",
        "eye drops and sometimes laser treatment",
        "regular eye exams",
        "people over sixty and people with a family history of glaucoma",
        "an eye doctor",
    ),
    (
        "celiac disease",
        "small intestine",
        ("diarrhea", "bloating", "weight loss"),
        "an immune reaction to gluten",
        "a blood test and a biopsy of the small intestine",
        "a strict gluten-free diet",
        "no known way, but early testing helps",
        "people with a family member who has it",
        "a gastroenterologist",
    ),
    (
        "psoriasis",
        "skin",
        ("thick red patches", "silvery scales", "itching"),
        "an overactive immune system that speeds up skin growth",
        "a look at the skin and sometimes a skin sample",
        "creams, light therapy and medicines that calm the immune system",
        "avoiding skin injury and managing stress",
        "people with a family history of psoriasis",
        "a dermatologist",
    ),
    (
        "heart failure",
        "heart",
        ("shortness of breath", "swollen ankles", "tiredness"),
        "a heart that cannot pump as well as it should",
        "an ultrasound of the heart",
        "medicines, lifestyle changes and sometimes devices",
        "controlling blood pressure and not smoking",
        "people with past heart attacks or high blood pressure",
        "a cardiologist",
    ),
    (
        "chronic obstructive pulmonary disease",
        "lungs",
        ("a long-lasting cough", "mucus", "shortness of breath"),
        "long-term damage to the lungs, most often from smoking",
        "a breathing test called spirometry",
        "inhaled medicines, lung rehabilitation and oxygen when needed",
        "not smoking and avoiding lung irritants",
        "current and former smokers",
        "a lung specialist",
    ),
    (
        "urinary tract infection",
        "bladder and urinary tract",
        ("burning when urinating", "a frequent urge to urinate", "cloudy urine"),
        "bacteria that enter the urinary tract",
        "a urine test",
        "medicines that treat the infection",
        "drinking fluids and good hygiene",
        "women and older adults",
        "a urologist",
    ),
    (
        "sinusitis",
        "sinuses",
        ("a blocked nose", "facial pain", "thick nasal mucus"),
        "swelling of the sinus lining, often after a cold",
        "an exam of the nose and sometimes a scan",
        "rest, nasal rinses and treating the cause",
        "hand washing and managing allergies",
        "people with allergies or nasal polyps",
        "an ear, nose and throat doctor",
    ),
    (
        "osteoporosis",
        "bones",
        ("no early symptoms", "loss of height", "bones that break easily"),
        "bones that lose density and strength",
        "a bone density scan",
        "calcium, vitamin D, exercise and medicines that strengthen bone",
        "weight-bearing exercise and enough calcium",
        "older women",
        "an endocrinologist",
    ),
    (
        "irritable bowel syndrome",
        "large intestine",
        ("belly pain", "bloating", "changes in bowel habits"),
        "changes in how the gut and brain work together",
        "a review of symptoms and tests that rule out other causes",
        "diet changes, stress management and medicines for symptoms",
        "no sure way, but regular meals and less stress help",
        "young adults and women",
        "a gastroenterologist",
    ),
    (
        "shingles",
        "nerves and skin",
        ("a painful rash", "burning or tingling", "blisters"),
        "the chickenpox virus waking up again",
        "a look at the rash",
        "antiviral medicines and pain relief",
        "the shingles vaccine",
        "adults over fifty and people with weak immune systems",
        "a dermatologist",
    ),
    (
        "epilepsy",
        "brain",
        ("seizures", "staring spells", "brief confusion"),
        "bursts of abnormal electrical activity in the brain",
        "a test of brain waves called an EEG",
        "medicines that prevent seizures",
        "protecting the head from injury",
        "people with past brain injuries or strokes",
        "a neurologist",
    ),
    (
        "depression",
        "mood",
        ("lasting sadness", "loss of interest", "poor sleep"),
        "a mix of genes, life events and brain chemistry",
        "a talk with a health care provider about mood and symptoms",
        "talk therapy, medicines or both",
        "staying connected with others and getting help early",
        "people with a family history of depression",
        "a psychiatrist",
    ),
    (
        "anxiety disorder",
        "mood",
        ("constant worry", "restlessness", "a racing heart"),
        "a mix of genes, stress and brain chemistry",
        "a talk with a health care provider about symptoms",
        "talk therapy, relaxation skills and sometimes medicines",
        "managing stress and getting help early",
        "people who have lived through trauma",
        "a psychiatrist",
    ),
    (
        "acne",
        "skin",
        ("pimples", "blackheads", "oily skin"),
        "blocked hair follicles and oil glands",
        "a look at the skin",
        "skin washes, creams and sometimes medicines",
        "gentle cleansing and not picking the skin",
        "teenagers",
        "a dermatologist",
    ),
    (
        "hepatitis B",
        "liver",
        ("yellow skin or eyes", "tiredness", "dark urine"),
        "a virus that infects the liver",
        "a blood test",
        "rest and, for lasting infection, antiviral medicines",
        "the hepatitis B vaccine",
        "people exposed to infected blood",
        "a liver specialist",
    ),
    (
        "tuberculosis",
        "lungs",
        ("a cough lasting weeks", "night sweats", "weight loss"),
        "a bacterium spread through the air",
        "a skin or blood test and a chest X-ray",
        "several months of medicines taken exactly as prescribed",
        "finding and treating infected people early",
        "people in close contact with someone who has it",
        "an infectious disease specialist",
    ),
    (
        "cataract",
        "eyes",
        ("cloudy vision", "faded colors", "glare from lights"),
        "clouding of the lens of the eye",
        "an eye exam",
        "stronger glasses at first and surgery when vision worsens",
        "wearing sunglasses and not smoking",
        "older adults",
        "an eye doctor",
    ),
    (
        "sleep apnea",
        "breathing during sleep",
        ("loud snoring", "daytime sleepiness", "waking up gasping"),
        "airways that close during sleep",
        "a sleep study",
        "a breathing device worn at night and weight loss",
        "keeping a healthy weight",
        "people who are overweight",
        "a sleep specialist",
    ),
    (
        "rheumatoid arthritis",
        "joints",
        ("painful swollen joints", "morning stiffness", "tiredness"),
        "the immune system attacking the joints",
        "blood tests and joint X-rays",
        "medicines that calm the immune system and physical therapy",
        "not smoking",
        "women and people with a family history of it",
        "a rheumatologist",
    ),
    (
        "stroke",
        "brain",
        ("sudden weakness on one side", "trouble speaking", "a drooping face"),
        "a blocked or burst blood vessel in the brain",
        "an emergency brain scan",
        "emergency care that restores blood flow, then rehabilitation",
        "controlling blood pressure and not smoking",
        "older adults and people with high blood pressure",
        "a neurologist",
    ),
    (
        "appendicitis",
        "appendix",
        ("pain in the lower right belly", "fever", "loss of appetite"),
        "a blocked and inflamed appendix",
        "a physical exam and an imaging scan",
        "emergency surgery to remove the appendix",
        "no known way",
        "teenagers and young adults",
        "a surgeon",
    ),
    (
        "influenza",
        "nose, throat and lungs",
        ("fever", "body aches", "cough"),
        "the influenza virus",
        "a swab test of the nose or throat",
        "rest, fluids and sometimes antiviral medicines",
        "a yearly flu vaccine",
        "young children, older adults and pregnant women",
        "a family doctor",
    ),
    (
        "gallstones",
        "gallbladder",
        ("pain in the upper right belly", "nausea", "pain after fatty meals"),
        "hardened deposits in the gallbladder",
        "an ultrasound of the belly",
        "watchful waiting or surgery to remove the gallbladder",
        "a healthy weight and regular meals",
        "women and people over forty",
        "a gastroenterologist",
    ),
    (
        "atrial fibrillation",
        "heart rhythm",
        ("a fluttering heartbeat", "tiredness", "dizziness"),
        "disorganized electrical signals in the upper heart chambers",
        "an electrocardiogram",
        "medicines that control heart rate and prevent clots",
        "controlling blood pressure and limiting alcohol",
        "older adults and people with heart disease",
        "a cardiologist",
    ),
    (
        "hay fever",
        "nose and eyes",
        ("sneezing", "a runny nose", "itchy eyes"),
        "an allergic reaction to pollen or dust",
        "a skin or blood allergy test",
        "antihistamines and nasal sprays",
        "avoiding known allergens",
        "people with a family history of allergies",
        "an allergist",
    ),
    (
        "lyme disease",
        "skin, joints and nerves",
        ("a bull's-eye rash", "fever", "joint pain"),
        "a bacterium spread by tick bites",
        "a review of symptoms and a blood test",
        "medicines that treat the infection",
        "avoiding tick bites and checking the skin after outdoor time",
        "people who spend time in wooded areas",
        "an infectious disease specialist",
    ),
    (
        "peptic ulcer",
        "stomach",
        ("burning stomach pain", "bloating", "nausea"),
        "a bacterial infection or long use of certain pain relievers",
        "a breath test or a scope of the stomach",
        "medicines that reduce stomach acid and treat infection",
        "limiting certain pain relievers and not smoking",
        "people who take pain relievers often",
        "a gastroenterologist",
    ),
    (
        "parkinson disease",
        "brain and movement",
        ("tremor", "slow movement", "stiff muscles"),
        "the loss of nerve cells that make dopamine",
        "a neurological exam",
        "medicines that replace or act like dopamine, and exercise",
        "no known way",
        "adults over sixty",
        "a neurologist",
    ),
    (
        "chickenpox",
        "skin",
        ("an itchy rash", "fever", "tiredness"),
        "the varicella virus",
        "a look at the rash",
        "rest, fluids and soothing lotions",
        "the chickenpox vaccine",
        "children who have not been vaccinated",
        "a family doctor",
    ),
]

# qtype -> (question templates, answer template). {n} = condition name.
QTYPES: dict[str, tuple[tuple[str, ...], str]] = {
    "information": (
        ("What is (are) {n} ?", "What is {n}?"),
        "{N} is a condition that affects the {part}. It is caused by {cause}. A health care provider can explain what it means for each person.",
    ),
    "symptoms": (
        ("What are the symptoms of {n} ?", "What are the signs of {n}?"),
        "Common symptoms of {n} include {s1}, {s2} and {s3}. Symptoms differ from person to person, so new or worsening symptoms are worth discussing with a doctor.",
    ),
    "causes": (
        ("What causes {n} ?", "Why do people get {n}?"),
        "{N} is caused by {cause}. Some people have a higher risk than others. A doctor can talk about the causes that matter in each case.",
    ),
    "exams and tests": (
        ("How to diagnose {n} ?", "What tests find {n}?"),
        "To diagnose {n}, a health care provider asks about symptoms and may order {test}. Only a clinician can make the diagnosis.",
    ),
    "treatment": (
        ("What are the treatments for {n} ?", "How is {n} treated?"),
        "Treatment for {n} often involves {treat}. The right plan depends on the person, so treatment choices should be made with a doctor such as {spec}.",
    ),
    "prevention": (
        ("How to prevent {n} ?", "Can {n} be prevented?"),
        "The risk of {n} can be lowered by {prev}. A health care provider can give advice that fits each person.",
    ),
    "susceptibility": (
        ("Who is at risk for {n}? ?", "Who gets {n}?"),
        "{N} is more common in {risk}. Anyone worried about their risk can ask a doctor about screening.",
    ),
    "outlook": (
        ("What is the outlook for {n} ?", "What is the prognosis of {n}?"),
        "The outlook for {n} varies. Many people do well with {treat}. Regular follow-up with {spec} helps catch changes early.",
    ),
    "specialist": (
        ("Which doctor treats {n} ?", "Who should I see about {n}?"),
        "{N} is often managed by a family doctor together with {spec}. Seek emergency care for severe or sudden symptoms.",
    ),
}

# Encyclopedia-style passages for pretraining the tiny model: the same facts, worded differently from the answers.
PASSAGES = (
    "{N} mainly involves the {part}. It comes from {cause}.",
    "People with {n} may notice {s1} or {s2}, and sometimes {s3}.",
    "Doctors often use {test} when they look for {n}.",
    "Care for {n} usually means {treat}.",
    "Ways to lower the chance of {n} include {prev}.",
    "{N} is seen more often in {risk}.",
    "A patient with {n} is often cared for by {spec}.",
)


def _fields(row: tuple) -> dict[str, str]:
    name, part, (s1, s2, s3), cause, test, treat, prev, risk, spec = row
    return {
        "n": name,
        "N": name[0].upper() + name[1:],
        "part": part,
        "s1": s1,
        "s2": s2,
        "s3": s3,
        "cause": cause,
        "test": test,
        "treat": treat,
        "prev": prev,
        "risk": risk,
        "spec": spec,
    }


def qa_pairs() -> list[dict[str, str]]:
    """Every (condition, qtype) pair once, with the question phrasing chosen by a seeded draw."""
    rng = random.Random(0)
    rows = []
    for row in CONDITIONS:
        f = _fields(row)
        for qtype, (questions, answer) in QTYPES.items():
            rows.append(
                {
                    "qtype": qtype,
                    "Question": rng.choice(questions).format(**f),
                    "Answer": answer.format(**f),
                }
            )
    rng.shuffle(rows)
    return rows


def corpus() -> list[str]:
    """Plain-text passages, one per condition, for pretraining the tiny model."""
    return [" ".join(p.format(**_fields(row)) for p in PASSAGES) for row in CONDITIONS]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    pairs = qa_pairs()
    with (OUT / "medquad_sample.jsonl").open("w") as fh:
        for pair in pairs:
            fh.write(json.dumps(pair) + "\n")
    (OUT / "pretrain_corpus.txt").write_text("\n".join(corpus()) + "\n")
    print(f"wrote {len(pairs)} QA pairs and {len(CONDITIONS)} passages to {OUT}")


if __name__ == "__main__":
    main()
