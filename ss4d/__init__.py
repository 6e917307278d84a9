"""ss4d: monocular video to 4D Gaussians (SS4D), pure PyTorch on CPU and GPU."""
__version__ = "0.1.0"


def __getattr__(name):
    if name == "VideoTo4DPipeline":
        from .pipeline.video_to_4d import VideoTo4DPipeline

        return VideoTo4DPipeline
    if name == "save_result":
        from .export.save import save_result

        return save_result
    raise AttributeError(name)
