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
