"""Stages 2 and 3 of LAPA: the vision-language policy, its training, ONNX export and runtime.

    configuration   PolicyConfig and the named sizes (tiny, small, siglip-base)
    towers          loading the pretrained vision and text towers (hub id, local folder, preset)
    modeling        LapaPolicy: vision tower + instruction encoder + fusion transformer + latent/action heads
    normalization   action/state statistics and the 256 quantile bins
    data            training samples on top of FrameStore (LAQ-labelled frames, action chunks)
    augmentation    random crop/shift and colour jitter in torch
    training        the shared accelerate training loop (metrics.jsonl, training.png, checkpoints)
    pretrain        command: latent pretraining on LAQ-labelled episodes
    finetune        command: action finetuning from a pretrained checkpoint or from scratch
    export          command: ONNX graphs (instruction encoder, per-frame policy), fp32/fp16, model card
    runtime         PolicyRuntime: ONNX Runtime wrapper with model-card checks and input validation
    bench           command: per-frame latency, PyTorch eager vs ONNX Runtime (JSON)

Plain Python, no ROS import. Heavy modules (torch, transformers) are imported by the modules that need
them; ``runtime`` needs only numpy, onnxruntime and tokenizers.
"""
