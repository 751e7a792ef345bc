"""lapa_models: the learning side of lapa_ros, plain Python with no ROS import.

  data/     episodes on disk (parquet + mp4), video folders
  laq/      stage 1, latent action quantization
  policy/   stages 2 and 3, latent pretraining and action finetuning, ONNX export and runtime
"""
