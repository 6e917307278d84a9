"""ss4d.media: the media layer below the pipeline (images, videos, masks), shared by every stage that reads or
writes pictures."""
