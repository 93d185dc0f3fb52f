"""A plain PIL implementation of a dataset item, the baseline that the benchmark and the tests compare with.

It takes the same random draws, in the same order, as VideoDataset, so with the same numpy seed both
give the same clip; it has none of the speed-ups and none of the robustness.
"""
import numpy as np
import torch
from PIL import Image

from cakes.data.transforms import (MEAN, STD, center_crop_offset, random_crop_box, random_flip, scaled_size,
                                   val_scale)


def pil_item(dataset, index):
    video = dataset.videos[index]
    size = dataset.input_size
    images = [Image.open(dataset.frame_path(video, i)).convert('RGB') for i in dataset.sample(video)]
    label = video.label
    if dataset.train:
        x, y, width, height = random_crop_box(*images[0].size, size)
        images = [image.crop((x, y, x + width, y + height)).resize((size, size), Image.BILINEAR) for image in images]
        if random_flip():
            images = [image.transpose(Image.FLIP_LEFT_RIGHT) for image in images]
            label = dataset.flip_labels.get(label, label)
    else:
        width, height = scaled_size(*images[0].size, val_scale(size))
        x, y = center_crop_offset(width, height, size)
        images = [image.resize((width, height), Image.BILINEAR).crop((x, y, x + size, y + size)) for image in images]
    clip = np.stack([np.asarray(image) for image in images]).astype(np.float32) / 255
    for channel in range(3):
        clip[..., channel] = (clip[..., channel] - MEAN[channel]) / STD[channel]
    return torch.from_numpy(clip.transpose(0, 3, 1, 2).reshape(-1, size, size)), label
