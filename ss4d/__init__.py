"""ss4d: monocular video to 4D Gaussians (SS4D), pure PyTorch on CPU and GPU."""
__version__ = "0.1.0"


def __getattr__(name):
    if name == "VideoTo4DPipeline":
        from .pipeline.video_to_4d import VideoTo4DPipeline

        return VideoTo4DPipeline
    raise AttributeError(name)
