"""The geometry of an MNIST Dice scene, shared by the scene sampler (dice.py) and the renderer
(dice_render.py), which never import each other.

World frame (metres, right-handed, z up, as gqn-datasets' MuJoCo rooms): the floor is z = 0,
the room spans x, y in [-ROOM, ROOM], the die (side DIE) stands on the floor.
`cameras[t] = (x, y, z, yaw, pitch)`: the camera position, yaw = the heading of the viewing
direction in the x-y plane, anticlockwise from +x (atan2(dy, dx)), pitch = its elevation above
the horizontal (negative: looking down); radians; no roll. Square frames, vertical field of
view YFOV.

Die faces (die frame, before its yaw about z): 0 +x, 1 -x, 2 +y, 3 -y (the four side faces),
4 +z (top), 5 -z (bottom, on the floor: never visible). Side-face digits stand upright.

`face_visibility[t, f]` in [0, 1] = (fraction of face f's projected area inside the frame)
x max(0, cos a), a = the angle between the face's outward normal and the direction from the
face's centre to the camera: 1 is a face seen head-on and wholly in frame, 0 a face turned
away from the camera (or out of frame). Nothing in the room can occlude the die (a convex die
in a convex room), so this is exact; tests check it against a face-id render.
"""
from __future__ import annotations

import numpy as np

ROOM, WALL = 4.0, 3.5     # room half-width and wall height
DIE = 1.0                 # die side
YFOV = np.radians(45.0)   # vertical field of view, square frames
ZNEAR, ZFAR = 0.05, 30.0
PATTERNS = ("stripes", "checks", "noise", "grain")  # the room's textures
SIDE_ANGLES = np.radians([0.0, 180.0, 90.0, 270.0])  # outward normal headings of faces 0-3

# Outward normal and "up" (the digit's up) of each face, die frame.
NORMALS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
UPS = np.array([[0, 0, 1]] * 4 + [[0, 1, 0]] * 2, float)
RIGHTS = np.cross(-NORMALS, UPS)  # right as seen from outside the face


def die_faces(position: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """World corners (6, 4, 3) of the die's faces, anticlockwise seen from outside starting
    bottom-left, and world outward normals (6, 3)."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    h = DIE / 2
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)  # (right, up) per corner
    local = NORMALS[:, None] * h + h * (signs[None, :, :1] * RIGHTS[:, None] + signs[None, :, 1:] * UPS[:, None])
    return local @ rot.T + position, NORMALS @ rot.T


def camera_pose(camera: np.ndarray) -> np.ndarray:
    """(x, y, z, yaw, pitch) -> 4x4 camera-to-world pose (OpenGL camera: looks along -z, y up)."""
    x, y, z, yaw, pitch = camera
    fwd = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, np.cross(right, fwd), -fwd, (x, y, z)
    return pose


def _clip(poly: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of a polygon (k, 3) of homogeneous (x, y, w) with plane . p >= 0."""
    d = poly @ plane
    out = []
    for i in range(len(poly)):
        j = (i + 1) % len(poly)
        if d[i] >= 0:
            out.append(poly[i])
        if (d[i] >= 0) != (d[j] >= 0):
            out.append(poly[i] + d[i] / (d[i] - d[j]) * (poly[j] - poly[i]))
    return np.asarray(out).reshape(-1, 3)


def _area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0] / poly[:, 2], poly[:, 1] / poly[:, 2]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


FRAME_PLANES = np.array([[1, 0, 1], [-1, 0, 1], [0, 1, 1], [0, -1, 1]], float)  # |x|, |y| <= w


def face_visibility(cameras: np.ndarray, position: np.ndarray, yaw: float) -> np.ndarray:
    """(T, 6) visibility of each face from each camera (see the module docstring)."""
    corners, normals = die_faces(position, yaw)
    centres = corners.mean(axis=1)
    f = 1.0 / np.tan(YFOV / 2)
    vis = np.zeros((len(cameras), 6))
    for t, cam in enumerate(cameras):
        view = np.linalg.inv(camera_pose(cam))
        for k in range(6):
            to_cam = cam[:3] - centres[k]
            cos = float(normals[k] @ to_cam) / np.linalg.norm(to_cam)
            if cos <= 0:
                continue  # turned away
            p = corners[k] @ view[:3, :3].T + view[:3, 3]
            poly = np.stack([f * p[:, 0], f * p[:, 1], -p[:, 2]], axis=1)  # homogeneous (x, y, w)
            if (np.abs(poly[:, :2]).max(axis=1) <= poly[:, 2]).all() and poly[:, 2].min() >= ZNEAR:
                vis[t, k] = cos  # wholly in frame (the common case)
                continue
            poly = _clip_near(poly)
            full = _area(poly)
            for plane in FRAME_PLANES:
                poly = _clip(poly, plane)
            vis[t, k] = min(1.0, _area(poly) / full) * cos if full > 0 else 0.0
    return vis


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Keep w >= ZNEAR (in front of the near plane)."""
    shifted = poly - np.array([0.0, 0.0, ZNEAR])
    return _clip(shifted, np.array([0.0, 0.0, 1.0])) + np.array([0.0, 0.0, ZNEAR])
