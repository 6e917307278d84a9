"""Render setup in bpy: engine and film, the TRELLIS lights, the camera placed from an OpenCV Camera, still renders."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .blender_base import (
    _CAM_NAME,
    TRELLIS_LIGHTS,
    RenderSettings,
    opencv_to_blender_c2w,
    require_bpy,
)


def setup_render(settings: RenderSettings) -> None:
    bpy = require_bpy()
    sc = bpy.context.scene
    r = sc.render
    eng = settings.engine.lower()
    if eng == "cycles":
        r.engine = "CYCLES"
        cy = sc.cycles
        cy.device = "CPU"
        cy.samples = max(1, int(settings.samples))
        cy.use_adaptive_sampling = False
        cy.pixel_filter_type = "BOX"
        cy.filter_width = 1.0
        cy.diffuse_bounces = 1
        cy.glossy_bounces = 1
        cy.transparent_max_bounces = 3
        cy.transmission_bounces = 3
        cy.use_denoising = bool(settings.denoise)
        cy.seed = int(settings.seed) & 0x7FFFFFFF
    elif eng == "workbench":
        r.engine = "BLENDER_WORKBENCH"
        sh = sc.display.shading
        sh.light = "STUDIO"
        sh.color_type = "TEXTURE"
        sh.show_specular_highlight = False
        sc.display.render_aa = "8"
    else:
        raise ValueError(f"unknown engine {settings.engine!r} (cycles or workbench)")
    if settings.threads and settings.threads > 0:
        r.threads_mode = "FIXED"
        r.threads = int(settings.threads)
    else:
        r.threads_mode = "AUTO"
    r.resolution_x = r.resolution_y = int(settings.size)
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = True
    r.use_motion_blur = False
    im = r.image_settings
    im.file_format = "PNG"
    im.color_mode = "RGBA"
    im.color_depth = "8"
    im.compression = 15
    try:
        sc.view_settings.view_transform = settings.view_transform
        sc.view_settings.look = "None"
    except TypeError:
        pass
    sc.view_settings.exposure = 0.0
    sc.view_settings.gamma = 1.0


def setup_lights() -> None:
    """The TRELLIS lights (in canonical units): point 1000 W at (4,1,6), area 10000 W at (0,0,10) scaled 100,
    area 1000 W at (0,0,-10). Lights that came with the asset are hidden from rendering."""
    bpy = require_bpy()
    for o in bpy.data.objects:
        if o.type == "LIGHT" and not o.name.startswith("ss4d_"):
            o.hide_render = True
    for name, kind, energy, loc, scale in TRELLIS_LIGHTS:
        ld = bpy.data.lights.new("ss4d_" + name, type=kind)
        ld.energy = energy
        ob = bpy.data.objects.new("ss4d_" + name, ld)
        bpy.context.scene.collection.objects.link(ob)
        ob.location = loc
        ob.scale = scale
        ob.rotation_euler = (0.0, 0.0, 0.0)


def setup_camera():
    bpy = require_bpy()
    sc = bpy.context.scene
    cam = bpy.data.objects.get(_CAM_NAME)
    if cam is None:
        cam = bpy.data.objects.new(_CAM_NAME, bpy.data.cameras.new(_CAM_NAME))
        sc.collection.objects.link(cam)
    cam.data.type = "PERSP"
    cam.data.lens_unit = "FOV"
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.sensor_width = cam.data.sensor_height = 32.0
    cam.data.shift_x = cam.data.shift_y = 0.0
    cam.data.clip_start = 0.01
    cam.data.clip_end = 1000.0
    sc.camera = cam
    return cam


def place_camera(cam_obj, camera, size: int):
    """Put the Blender camera where ``camera`` (OpenCV, normalised intrinsics) is; returns the camera as Blender
    has it (``matrix_world`` read back and converted) so what is stored is what was rendered."""
    bpy = require_bpy()
    from mathutils import Matrix  # noqa: PLC0415

    from ss4d.render.camera import camera_from_blender  # noqa: PLC0415

    fov = float(camera.fovx)
    cam_obj.data.angle = fov
    cam_obj.matrix_world = Matrix(opencv_to_blender_c2w(camera.extrinsics.double().numpy()).tolist())
    bpy.context.view_layer.update()
    c2w = np.array(cam_obj.matrix_world, dtype=np.float64)
    got = camera_from_blender(c2w, float(cam_obj.data.angle), size, size, camera.near, camera.far)
    return got


def render_still(path) -> None:
    bpy = require_bpy()
    bpy.context.scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    if not Path(path).is_file():
        raise RuntimeError(f"Blender did not write {path}")
