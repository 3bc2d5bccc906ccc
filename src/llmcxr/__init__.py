"""llmcxr: one language model that reads and draws chest X-rays (LLM-CXR, Lee et al., ICLR 2024).

Pipeline, one package per stage, data flowing one way:

    imaging  -> vq (image tokenizer) -> prompt -> model -> generation -> metrics
    reports (parsing, CheXpert labeler, VQA)    synth (a paired synthetic CXR world)
"""

__version__ = "0.1.0"
