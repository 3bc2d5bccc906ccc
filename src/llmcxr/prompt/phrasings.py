"""Instruction phrasings for the image tasks: one is drawn per sample so the model learns the task,
not one sentence (LLM-CXR, Lee et al. 2023, Sec. 3.2, used ten per task; these are written anew)."""

from __future__ import annotations

# CXR -> report: the image is the input, the report the response.
REPORT_GENERATION: tuple[str, ...] = (
    "Write the radiology report for this chest X-ray.",
    "Describe the findings of the chest X-ray given as input in a free-text radiology report.",
    "Read the chest radiograph and write its report.",
    "Produce a free-text radiology report for the chest X-ray below.",
    "You are a radiologist. Report on the chest X-ray provided.",
    "Generate the findings and impression for the input chest X-ray.",
    "Interpret this chest radiograph and write a report.",
    "Look at the chest X-ray and write what a radiologist would report.",
    "Create a radiology report that matches the given chest X-ray image.",
    "Summarise the chest X-ray below as a free-text radiology report.",
    "Provide the radiology report corresponding to this frontal chest X-ray.",
    "Draft a report describing the chest X-ray image in the input.",
)

# report -> CXR: the report is the input, the image the response.
IMAGE_GENERATION: tuple[str, ...] = (
    "Generate a chest X-ray image that matches the radiology report.",
    "Draw the chest X-ray described by the report given as input.",
    "Create a chest radiograph consistent with the following report.",
    "Produce a frontal chest X-ray image for this free-text radiology report.",
    "Synthesize the chest X-ray that this radiology report describes.",
    "From the report below, generate the corresponding chest X-ray image.",
    "Make a chest X-ray image whose findings agree with the input report.",
    "Render a chest radiograph that fits the report provided.",
    "Using the radiology report as a guide, generate a chest X-ray.",
    "Output a chest X-ray image that a radiologist would describe with this report.",
    "Generate the frontal chest radiograph corresponding to the given findings.",
    "Create the chest X-ray image for the radiology report in the input.",
)

# VQA samples need no phrasing list: the question itself is the instruction.
PHRASINGS: dict[str, tuple[str, ...]] = {
    "report_generation": REPORT_GENERATION,
    "image_generation": IMAGE_GENERATION,
}

# The published LLM-CXR checkpoint was trained on these ten phrasings per task, word for word
# (hyn2028/llm-cxr ``training/mimiccxr_vq_dataset.py``, CXR_VQ_INPUT_INSTRUCTION_LIST and
# CXR_VQ_OUTPUT_INSTRUCTION_LIST); its demo asks with the first of each. A prompt for that model has
# to use them to be the prompt it learned (``prompt_layout: official``).
OFFICIAL_REPORT_GENERATION: tuple[str, ...] = (
    "Generate free-text radiology reports for the entered chest X-ray images.",
    "Use the entered chest X-ray images to create corresponding free-text radiology reports.",
    "Based on the entered chest X-ray images, produce free-text radiology reports.",
    "Create free-text radiology reports that correspond to the entered chest X-ray images.",
    "Utilize the entered chest X-ray images to generate corresponding free-text radiology reports.",
    "Generate free-text radiology reports in accordance with the entered chest X-ray images.",
    "Use the entered chest X-ray images to create accurate free-text radiology reports.",
    "Produce free-text radiology reports that match the entered chest X-ray images.",
    "Create free-text radiology reports that are consistent with the entered chest X-ray images.",
    "Utilize the entered chest X-ray images to generate comprehensive free-text radiology reports.",
)
OFFICIAL_IMAGE_GENERATION: tuple[str, ...] = (
    "Generate a chest X-ray image that corresponds to the entered free-text radiology reports for the chest X-ray image.",
    "Use the free-text radiology reports for the chest X-ray image to produce a corresponding chest X-ray image.",
    "Utilize the entered free-text radiology reports for the chest X-ray image to create a corresponding chest X-ray image.",
    "Create a chest X-ray image that matches the free-text radiology reports entered for the chest X-ray image.",
    "Produce a chest X-ray image that is consistent with the free-text radiology reports entered for the chest X-ray image.",
    "Based on the free-text radiology reports for the chest X-ray image, generate a corresponding chest X-ray image.",
    "Use the free-text radiology reports entered for the chest X-ray image to create a corresponding chest X-ray image.",
    "Generate a chest X-ray image that is in accordance with the free-text radiology reports for the chest X-ray image entered.",
    "Create a chest X-ray image that corresponds to the free-text radiology reports entered for the chest X-ray image.",
    "Utilize the entered free-text radiology reports for the chest X-ray image to produce a corresponding chest X-ray image.",
)
OFFICIAL_PHRASINGS: dict[str, tuple[str, ...]] = {
    "report_generation": OFFICIAL_REPORT_GENERATION,
    "image_generation": OFFICIAL_IMAGE_GENERATION,
}


def phrasings_for(prompt_layout: str) -> dict[str, tuple[str, ...]]:
    """The instruction phrasings a model of this prompt layout trains on and is asked with (first = default)."""
    return OFFICIAL_PHRASINGS if prompt_layout == "official" else PHRASINGS
