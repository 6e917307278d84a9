/* ss4d splat viewer: plays a sequence of 3D Gaussian frames with WebGL2.
 *
 * Frames come embedded in the page as compact "SS4F" records (see decodeFrame; written by ss4d/export/viewer.py),
 * one inline script calling ss4dFrame(i, base64) each, so the page works when opened straight from disk and draws
 * every frame as soon as the parser reaches it. INRIA-3DGS .ply files can also be picked or dropped onto the page.
 *
 * No external libraries. Per frame the Gaussians are decoded, packed into an RGBA32F texture
 * (4 texels each: position+opacity, colour, covariance) and drawn as instanced quads: the vertex shader projects
 * the 3D covariance to 2D (EWA, with the mip-splatting 0.1 px^2 screen filter and opacity compensation used by
 * ss4d's rasterizer) and stretches the quad to 3 sigma along the eigenvectors; the fragment shader evaluates the
 * Gaussian. Splats are sorted front to back on the CPU (16-bit counting sort on view depth) whenever the view or
 * the frame changes, and blended with the "under" operator onto a transparent canvas over the page background.
 *
 * Conventions follow ss4d: OpenCV camera (x right, y down, z forward), z-up world, orbit camera
 * eye = target + r (cos yaw cos pitch, sin yaw cos pitch, sin pitch), vertical field of view 40 degrees.
 */
(function (root) {
  'use strict';

  var SH_C0 = 0.28209479177387814;
  var PER_ROW = 512; // Gaussians per texture row (4 texels each -> 2048 texels)
  var TYPES = {
    char: ['Int8', 1], int8: ['Int8', 1], uchar: ['Uint8', 1], uint8: ['Uint8', 1],
    short: ['Int16', 2], int16: ['Int16', 2], ushort: ['Uint16', 2], uint16: ['Uint16', 2],
    int: ['Int32', 4], int32: ['Int32', 4], uint: ['Uint32', 4], uint32: ['Uint32', 4],
    float: ['Float32', 4], float32: ['Float32', 4], double: ['Float64', 8], float64: ['Float64', 8]
  };

  // ------------------------------------------------------------------------------------------------------------
  // PLY parsing
  // ------------------------------------------------------------------------------------------------------------
  function parseHeader(bytes) {
    var limit = Math.min(bytes.length, 1 << 16);
    var text = '';
    for (var i = 0; i < limit; i++) text += String.fromCharCode(bytes[i]);
    var end = text.indexOf('end_header');
    if (text.slice(0, 3) !== 'ply' || end < 0) throw new Error('not a PLY file');
    var nl = text.indexOf('\n', end);
    if (nl < 0) throw new Error('truncated PLY header');
    var lines = text.slice(0, end).split(/\r?\n/);
    var format = null, elements = [], cur = null;
    for (var k = 0; k < lines.length; k++) {
      var w = lines[k].trim().split(/\s+/);
      if (w[0] === 'format') format = w[1];
      else if (w[0] === 'element') { cur = { name: w[1], count: parseInt(w[2], 10), props: [], size: 0 }; elements.push(cur); }
      else if (w[0] === 'property' && cur) {
        if (w[1] === 'list') { cur.list = true; continue; }
        var t = TYPES[w[1]];
        if (!t) throw new Error('unsupported PLY type ' + w[1]);
        cur.props.push({ name: w[2], type: t[0], size: t[1], offset: cur.size });
        cur.size += t[1];
      }
    }
    return { format: format, elements: elements, dataStart: nl + 1 };
  }

  /* Parse an INRIA-3DGS PLY (binary little/big endian). Returns {count, position [3N], color [4N] (rgb in [0,1],
   * opacity), cov [6N] (xx, xy, xz, yy, yz, zz)} as Float32Arrays. */
  function parsePly(buffer) {
    var bytes = new Uint8Array(buffer);
    var h = parseHeader(bytes);
    if (h.format !== 'binary_little_endian' && h.format !== 'binary_big_endian') {
      throw new Error('only binary PLY files are supported (got ' + h.format + ')');
    }
    var little = h.format === 'binary_little_endian';
    var offset = h.dataStart, vert = null;
    for (var e = 0; e < h.elements.length; e++) {
      var el = h.elements[e];
      if (el.name === 'vertex') { vert = el; break; }
      if (el.list) throw new Error('PLY element "' + el.name + '" with list properties before the vertices');
      offset += el.size * el.count;
    }
    if (!vert) throw new Error('PLY without a vertex element');
    if (vert.list) throw new Error('vertex element with list properties');
    var n = vert.count, stride = vert.size;
    if (offset + n * stride > bytes.length) throw new Error('truncated PLY data');
    var P = {};
    vert.props.forEach(function (p) { P[p.name] = p; });
    var dv = new DataView(buffer, 0);
    function col(name, fallback) {
      var out = new Float32Array(n);
      var p = P[name];
      if (!p) { out.fill(fallback); return out; }
      var get = dv['get' + p.type].bind(dv), o = offset + p.offset;
      for (var i = 0; i < n; i++) out[i] = get(o + i * stride, little);
      return out;
    }
    var x = col('x', 0), y = col('y', 0), z = col('z', 0);
    var r, g, b;
    if (P.f_dc_0) { r = col('f_dc_0', 0); g = col('f_dc_1', 0); b = col('f_dc_2', 0); }
    var red = P.red ? col('red', 0) : null, green = P.green ? col('green', 0) : null, blue = P.blue ? col('blue', 0) : null;
    var op = col('opacity', 10.0);
    var s0 = col('scale_0', Math.log(0.005)), s1 = col('scale_1', Math.log(0.005)), s2 = col('scale_2', Math.log(0.005));
    var q0 = col('rot_0', 1), q1 = col('rot_1', 0), q2 = col('rot_2', 0), q3 = col('rot_3', 0);
    var position = new Float32Array(3 * n), color = new Float32Array(4 * n), cov = new Float32Array(6 * n);
    var colorScale = (P.red && P.red.size === 1) ? 1 / 255 : 1;
    for (var i = 0; i < n; i++) {
      position[3 * i] = x[i]; position[3 * i + 1] = y[i]; position[3 * i + 2] = z[i];
      var cr, cg, cb;
      if (r) { cr = 0.5 + SH_C0 * r[i]; cg = 0.5 + SH_C0 * g[i]; cb = 0.5 + SH_C0 * b[i]; }
      else if (red) { cr = red[i] * colorScale; cg = green[i] * colorScale; cb = blue[i] * colorScale; }
      else { cr = cg = cb = 0.6; }
      color[4 * i] = Math.min(1, Math.max(0, cr));
      color[4 * i + 1] = Math.min(1, Math.max(0, cg));
      color[4 * i + 2] = Math.min(1, Math.max(0, cb));
      color[4 * i + 3] = 1 / (1 + Math.exp(-op[i]));
      var c = covariance(Math.exp(s0[i]), Math.exp(s1[i]), Math.exp(s2[i]), q0[i], q1[i], q2[i], q3[i]);
      for (var k = 0; k < 6; k++) cov[6 * i + k] = c[k];
    }
    return { count: n, position: position, color: color, cov: cov };
  }

  /* 3D covariance R S S^T R^T for scales (sx, sy, sz) and quaternion (w, x, y, z) (normalised here). */
  function covariance(sx, sy, sz, w, x, y, z) {
    var l = Math.sqrt(w * w + x * x + y * y + z * z) || 1;
    w /= l; x /= l; y /= l; z /= l;
    var R = [
      1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
      2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
      2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)
    ];
    var M = [R[0] * sx, R[1] * sy, R[2] * sz, R[3] * sx, R[4] * sy, R[5] * sz, R[6] * sx, R[7] * sy, R[8] * sz];
    return [
      M[0] * M[0] + M[1] * M[1] + M[2] * M[2], M[0] * M[3] + M[1] * M[4] + M[2] * M[5],
      M[0] * M[6] + M[1] * M[7] + M[2] * M[8], M[3] * M[3] + M[4] * M[4] + M[5] * M[5],
      M[3] * M[6] + M[4] * M[7] + M[5] * M[8], M[6] * M[6] + M[7] * M[7] + M[8] * M[8]
    ];
  }

  /* Decode one compact "SS4F" frame (little-endian): magic "SS4F", uint32 n, float32 lo[3], hi[3], smin, smax, then
   * uint16 position[3n] (lo + q / 65535 (hi - lo)), int8 rotation[4n] (w, x, y, z; q / 127, renormalised),
   * uint8 rgba[4n] (colour and opacity times 255), uint8 logScale[3n] (smin + q / 255 (smax - smin)).
   * Returns the same {count, position, color, cov} as parsePly. */
  function decodeFrame(buffer) {
    var bytes = new Uint8Array(buffer), HEAD = 40;
    if (bytes.length < HEAD || String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]) !== 'SS4F') {
      throw new Error('not an ss4d frame record');
    }
    var dv = new DataView(buffer, 0), n = dv.getUint32(4, true);
    if (bytes.length !== HEAD + 17 * n) throw new Error('frame record has ' + bytes.length + ' bytes, expected ' + (HEAD + 17 * n));
    var lo = [], span = [];
    for (var a = 0; a < 3; a++) {
      lo.push(dv.getFloat32(8 + 4 * a, true));
      span.push((dv.getFloat32(20 + 4 * a, true) - lo[a]) / 65535);
    }
    var smin = dv.getFloat32(32, true), sstep = (dv.getFloat32(36, true) - smin) / 255;
    var o = HEAD, pos = new Uint16Array(n * 3);
    for (var j = 0; j < 3 * n; j++) pos[j] = dv.getUint16(o + 2 * j, true);
    o += 6 * n;
    var rot = new Int8Array(buffer, o, 4 * n); o += 4 * n;
    var rgba = new Uint8Array(buffer, o, 4 * n); o += 4 * n;
    var ls = new Uint8Array(buffer, o, 3 * n);
    var position = new Float32Array(3 * n), color = new Float32Array(4 * n), cov = new Float32Array(6 * n);
    for (var i = 0; i < n; i++) {
      for (var k = 0; k < 3; k++) position[3 * i + k] = lo[k] + pos[3 * i + k] * span[k];
      for (k = 0; k < 4; k++) color[4 * i + k] = rgba[4 * i + k] / 255;
      var c = covariance(Math.exp(smin + ls[3 * i] * sstep), Math.exp(smin + ls[3 * i + 1] * sstep),
        Math.exp(smin + ls[3 * i + 2] * sstep), rot[4 * i] / 127, rot[4 * i + 1] / 127, rot[4 * i + 2] / 127,
        rot[4 * i + 3] / 127);
      for (k = 0; k < 6; k++) cov[6 * i + k] = c[k];
    }
    return { count: n, position: position, color: color, cov: cov };
  }

  // ------------------------------------------------------------------------------------------------------------
  // camera maths (row-major 4x4 arrays)
  // ------------------------------------------------------------------------------------------------------------
  function sub(a, b) { return [a[0] - b[0], a[1] - b[1], a[2] - b[2]]; }
  function cross(a, b) { return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]; }
  function norm(a) { var l = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / l, a[1] / l, a[2] / l]; }
  function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

  /* OpenCV world-to-camera matrix (row-major, 16 numbers), like ss4d.render.camera.look_at_extrinsics. */
  function lookAt(eye, target, up) {
    var zf = norm(sub(target, eye));
    var xr = norm(cross([-up[0], -up[1], -up[2]], zf));
    var yd = norm(cross(zf, xr));
    return [xr[0], xr[1], xr[2], -dot(xr, eye), yd[0], yd[1], yd[2], -dot(yd, eye),
      zf[0], zf[1], zf[2], -dot(zf, eye), 0, 0, 0, 1];
  }

  function orbitEye(yaw, pitch, radius, target) {
    return [target[0] + radius * Math.cos(yaw) * Math.cos(pitch), target[1] + radius * Math.sin(yaw) * Math.cos(pitch),
      target[2] + radius * Math.sin(pitch)];
  }

  function matMul(A, B) { // row-major 4x4
    var C = new Array(16);
    for (var i = 0; i < 4; i++) for (var j = 0; j < 4; j++) {
      var s = 0;
      for (var k = 0; k < 4; k++) s += A[4 * i + k] * B[4 * k + j];
      C[4 * i + j] = s;
    }
    return C;
  }

  // file coordinates -> z-up world (row-major 4x4), for dropped PLYs (ss4d.export.ply's up names)
  var UP_TRANSFORMS = {
    z: [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
    y: [1, 0, 0, 0, 0, 0, -1, 0, 0, 1, 0, 0, 0, 0, 0, 1], // inverse of (x, y, z) -> (x, z, -y)
    'y-down': [1, 0, 0, 0, 0, 0, 1, 0, 0, -1, 0, 0, 0, 0, 0, 1] // inverse of (x, y, z) -> (x, -z, y)
  };

  /* Front-to-back order of the Gaussians in front of the camera (view z > near): 16-bit counting sort.
   * Returns a Uint32Array of indices (its length is the number of splats to draw). */
  function sortByDepth(position, count, view, near) {
    near = near === undefined ? 0.2 : near;
    var depth = new Float64Array(count), keep = new Uint32Array(count), m = 0;
    var a = view[8], b = view[9], c = view[10], d = view[11];
    var lo = Infinity, hi = -Infinity;
    for (var i = 0; i < count; i++) {
      var z = a * position[3 * i] + b * position[3 * i + 1] + c * position[3 * i + 2] + d;
      if (z > near) {
        depth[m] = z; keep[m++] = i;
        if (z < lo) lo = z;
        if (z > hi) hi = z;
      }
    }
    var out = new Uint32Array(m);
    if (m === 0) return out;
    var BUCKETS = 65536, scale = (BUCKETS - 1) / Math.max(hi - lo, 1e-12);
    var counts = new Uint32Array(BUCKETS), key = new Uint16Array(m);
    for (var j = 0; j < m; j++) {
      key[j] = Math.min(BUCKETS - 1, Math.max(0, Math.floor((depth[j] - lo) * scale)));
      counts[key[j]]++;
    }
    for (var s = 0, t = 0; t < BUCKETS; t++) { var cnt = counts[t]; counts[t] = s; s += cnt; }
    for (var q = 0; q < m; q++) out[counts[key[q]]++] = keep[q];
    return out;
  }

  /* Pack one parsed frame into the texture layout: 4 RGBA32F texels per Gaussian
   * (x, y, z, -) (r, g, b, opacity) (cxx, cxy, cxz, cyy) (cyz, czz, -, -). */
  function packFrame(frame) {
    var rows = Math.max(1, Math.ceil(frame.count / PER_ROW));
    var data = new Float32Array(PER_ROW * 4 * 4 * rows);
    for (var i = 0; i < frame.count; i++) {
      var o = 16 * i;
      data[o] = frame.position[3 * i]; data[o + 1] = frame.position[3 * i + 1]; data[o + 2] = frame.position[3 * i + 2];
      data[o + 4] = frame.color[4 * i]; data[o + 5] = frame.color[4 * i + 1]; data[o + 6] = frame.color[4 * i + 2];
      data[o + 7] = frame.color[4 * i + 3];
      for (var k = 0; k < 4; k++) data[o + 8 + k] = frame.cov[6 * i + k];
      data[o + 12] = frame.cov[6 * i + 4]; data[o + 13] = frame.cov[6 * i + 5];
    }
    return { data: data, width: PER_ROW * 4, height: rows };
  }

  // ------------------------------------------------------------------------------------------------------------
  // WebGL2 renderer
  // ------------------------------------------------------------------------------------------------------------
  var VS = [
    '#version 300 es',
    'precision highp float; precision highp int; precision highp sampler2D;',
    'uniform sampler2D u_data;',
    'uniform mat4 u_view;',      // world -> OpenCV camera
    'uniform vec2 u_focal;',     // pixels
    'uniform vec2 u_viewport;',  // pixels
    'uniform float u_kernel;',   // screen-space filter (px^2)
    'in vec2 a_corner;',
    'in uint a_index;',
    'out vec4 v_color;',
    'out vec2 v_offset;',
    'void main() {',
    '  int i = int(a_index);',
    '  ivec2 base = ivec2((i & ' + (PER_ROW - 1) + ') << 2, i >> ' + Math.log2(PER_ROW) + ');',
    '  vec4 t0 = texelFetch(u_data, base, 0);',
    '  vec4 t1 = texelFetch(u_data, base + ivec2(1, 0), 0);',
    '  vec4 t2 = texelFetch(u_data, base + ivec2(2, 0), 0);',
    '  vec4 t3 = texelFetch(u_data, base + ivec2(3, 0), 0);',
    '  vec4 cam = u_view * vec4(t0.xyz, 1.0);',
    '  gl_Position = vec4(0.0, 0.0, 2.0, 1.0);',  // culled unless overwritten below
    '  if (cam.z <= 0.2) return;',
    '  vec2 lim = 1.3 * 0.5 * u_viewport / u_focal;',
    '  float tx = clamp(cam.x / cam.z, -lim.x, lim.x) * cam.z;',
    '  float ty = clamp(cam.y / cam.z, -lim.y, lim.y) * cam.z;',
    '  float z2 = cam.z * cam.z;',
    '  mat3 J = mat3(u_focal.x / cam.z, 0.0, 0.0, 0.0, u_focal.y / cam.z, 0.0,',
    '                -u_focal.x * tx / z2, -u_focal.y * ty / z2, 0.0);',
    '  mat3 T = J * mat3(u_view);',
    '  mat3 V = mat3(t2.x, t2.y, t2.z, t2.y, t2.w, t3.x, t2.z, t3.x, t3.y);',
    '  mat3 C = T * V * transpose(T);',
    '  float a = C[0][0], b = C[0][1], c = C[1][1];',
    '  float det0 = a * c - b * b;',
    '  a += u_kernel; c += u_kernel;',
    '  float det1 = a * c - b * b;',
    '  if (det0 <= 1e-6 || det1 <= 1e-6) return;',
    '  float opacity = t1.w * sqrt(det0 / (det1 + 1e-6) + 1e-6);',
    '  if (opacity < 1.0 / 255.0) return;',
    '  float mid = 0.5 * (a + c);',
    '  float rad = length(vec2(0.5 * (a - c), b));',
    '  float l1 = mid + rad, l2 = max(mid - rad, 0.0);',
    '  vec2 e1 = abs(b) > 1e-12 ? normalize(vec2(b, l1 - a)) : (a >= c ? vec2(1.0, 0.0) : vec2(0.0, 1.0));',
    '  vec2 major = min(3.0 * sqrt(l1), 4096.0) * e1;',
    '  vec2 minor = min(3.0 * sqrt(l2), 4096.0) * vec2(e1.y, -e1.x);',
    '  vec2 center = u_focal * cam.xy / cam.z + 0.5 * u_viewport;',
    '  vec2 p = center + a_corner.x * major + a_corner.y * minor;',
    '  gl_Position = vec4(p.x / u_viewport.x * 2.0 - 1.0, 1.0 - p.y / u_viewport.y * 2.0, 0.0, 1.0);',
    '  v_offset = 3.0 * a_corner;',
    '  v_color = vec4(t1.rgb, opacity);',
    '}'
  ].join('\n');

  var FS = [
    '#version 300 es',
    'precision highp float;',
    'in vec4 v_color;',
    'in vec2 v_offset;',
    'out vec4 fragColor;',
    'void main() {',
    '  float alpha = min(0.99, v_color.a * exp(-0.5 * dot(v_offset, v_offset)));',
    '  if (alpha < 1.0 / 255.0) discard;',
    '  fragColor = vec4(v_color.rgb * alpha, alpha);',
    '}'
  ].join('\n');

  function compile(gl, type, src) {
    var s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error('shader: ' + gl.getShaderInfoLog(s));
    return s;
  }

  function Renderer(canvas) {
    var gl = canvas.getContext('webgl2', { antialias: false, premultipliedAlpha: true, alpha: true });
    if (!gl) throw new Error('WebGL2 is not available in this browser');
    this.gl = gl;
    var prog = gl.createProgram();
    gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VS));
    gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, FS));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error('program: ' + gl.getProgramInfoLog(prog));
    this.prog = prog;
    this.u = {};
    var self = this;
    ['u_data', 'u_view', 'u_focal', 'u_viewport', 'u_kernel'].forEach(function (n) {
      self.u[n] = gl.getUniformLocation(prog, n);
    });
    this.vao = gl.createVertexArray();
    gl.bindVertexArray(this.vao);
    var quad = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, quad);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, 1, 1, -1, 1]), gl.STATIC_DRAW);
    var ac = gl.getAttribLocation(prog, 'a_corner');
    gl.enableVertexAttribArray(ac);
    gl.vertexAttribPointer(ac, 2, gl.FLOAT, false, 0, 0);
    this.indexBuffer = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuffer);
    var ai = gl.getAttribLocation(prog, 'a_index');
    gl.enableVertexAttribArray(ai);
    gl.vertexAttribIPointer(ai, 1, gl.UNSIGNED_INT, 0, 0);
    gl.vertexAttribDivisor(ai, 1);
    gl.bindVertexArray(null);
    this.maxTex = gl.getParameter(gl.MAX_TEXTURE_SIZE);
    this.textures = [];
    this.drawCount = 0;
  }

  Renderer.prototype.upload = function (frameIndex, frame) {
    var gl = this.gl, packed = packFrame(frame);
    if (packed.height > this.maxTex) throw new Error('frame ' + frameIndex + ' has too many Gaussians for this GPU');
    var tex = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32F, packed.width, packed.height, 0, gl.RGBA, gl.FLOAT, packed.data);
    this.textures[frameIndex] = tex;
  };

  Renderer.prototype.setOrder = function (order) {
    var gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.indexBuffer);
    gl.bufferData(gl.ARRAY_BUFFER, order, gl.DYNAMIC_DRAW);
    this.drawCount = order.length;
  };

  Renderer.prototype.draw = function (frameIndex, view, focal, width, height) {
    var gl = this.gl;
    gl.viewport(0, 0, width, height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    var tex = this.textures[frameIndex];
    if (!tex || !this.drawCount) return;
    gl.useProgram(this.prog);
    gl.enable(gl.BLEND);
    gl.blendFuncSeparate(gl.ONE_MINUS_DST_ALPHA, gl.ONE, gl.ONE_MINUS_DST_ALPHA, gl.ONE); // front-to-back "under"
    gl.disable(gl.DEPTH_TEST);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.uniform1i(this.u.u_data, 0);
    var colMajor = new Float32Array(16);
    for (var i = 0; i < 4; i++) for (var j = 0; j < 4; j++) colMajor[4 * j + i] = view[4 * i + j];
    gl.uniformMatrix4fv(this.u.u_view, false, colMajor);
    gl.uniform2f(this.u.u_focal, focal, focal);
    gl.uniform2f(this.u.u_viewport, width, height);
    gl.uniform1f(this.u.u_kernel, 0.1);
    gl.bindVertexArray(this.vao);
    gl.drawArraysInstanced(gl.TRIANGLE_FAN, 0, 4, this.drawCount);
    gl.bindVertexArray(null);
  };

  // ------------------------------------------------------------------------------------------------------------
  // the page
  // ------------------------------------------------------------------------------------------------------------
  function naturalCompare(a, b) {
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: 'base' });
  }

  function base64ToBuffer(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }

  /* The player. Frames arrive one by one (receive / addFrame); the first one is drawn at once, the others join
   * playback as they come, and a frame that fails is reported and skipped. State for tests: frames, errors,
   * frameIndex, drawnFrame (last frame drawn), done (all frames arrived or failed). */
  function App(config) {
    this.config = config;
    this.$ = function (id) { return document.getElementById(id); };
    this.canvas = this.$('ss4d-canvas');
    this.total = config.frameCount || 0;
    this.frames = [];
    this.errors = [];
    this.loaded = 0;
    this.done = false;
    this.frameIndex = 0;
    this.drawnFrame = -1;
    this.fps = config.fps || 30;
    this.playing = true;
    this.fov = (config.fov || 40) * Math.PI / 180;
    this.home = { yaw: (config.yaw === undefined ? 45 : config.yaw) * Math.PI / 180,
      pitch: (config.pitch === undefined ? 20 : config.pitch) * Math.PI / 180,
      radius: config.radius || 2, target: [0, 0, 0] };
    this.cam = JSON.parse(JSON.stringify(this.home));
    this.upMatrix = UP_TRANSFORMS.z;
    this.dirty = true;
    this.orderKey = null;
    this.renderer = null;
    try {
      this.renderer = new Renderer(this.canvas);
    } catch (e) {
      this.fatal = e.message;
      this.status('Error: ' + e.message, true);
      return;
    }
    this.bindUi();
    this.readHash();
    this.setTotal(this.total);
    this.showProgress();
    this.start();
  }

  App.prototype.status = function (msg, isError) {
    var el = this.$('ss4d-status');
    el.textContent = msg;
    el.className = isError ? 'error' : '';
    el.style.display = msg ? 'block' : 'none';
  };

  App.prototype.showProgress = function () {
    if (this.fatal) return;
    var failed = [], msg = '';
    for (var i = 0; i < this.total; i++) if (this.errors[i]) failed.push(i);
    if (!this.done) msg = 'Loading frames... ' + this.loaded + ' / ' + this.total + (this.loaded ? '' : ' (first frame)');
    if (failed.length) {
      msg += (msg ? ' ' : '') + failed.length + ' frame' + (failed.length > 1 ? 's' : '') + ' could not be read ('
        + failed.slice(0, 3).map(function (i) { return 'frame ' + (i + 1) + ': ' + this.errors[i]; }, this).join('; ')
        + (failed.length > 3 ? '; ...' : '') + '); the other frames play.';
    } else if (this.done && !this.loaded) msg = 'No frames to show.';
    this.status(msg, failed.length > 0 || (this.done && !this.loaded));
  };

  /* One embedded frame (base64 of an SS4F record) has arrived: decode, upload and (if current) draw it. */
  App.prototype.receive = function (i, b64) {
    try {
      if (!(i >= 0 && i < this.total)) throw new Error('unexpected frame number ' + i);
      this.addFrame(i, decodeFrame(base64ToBuffer(b64)));
    } catch (e) {
      this.errors[i] = e.message || String(e);
    }
    this.showProgress();
  };

  /* No more frames will arrive: any frame not received is reported as missing. */
  App.prototype.finish = function () {
    if (this.done) return;
    for (var i = 0; i < this.total; i++) {
      if (!this.frames[i] && !this.errors[i]) this.errors[i] = 'missing from the file';
    }
    this.done = true;
    this.showProgress();
  };

  App.prototype.addFrame = function (i, frame) {
    this.renderer.upload(i, frame);
    this.frames[i] = frame;
    this.loaded++;
    if (this.loaded === 1 && !this.frames[this.frameIndex] && !this.pinned) this.frameIndex = i;
    this.setFrame(this.frameIndex);
    if (i === this.frameIndex) this.render(); // draw now, not only at the next animation frame
  };

  App.prototype.setTotal = function (n) {
    this.total = n;
    this.$('ss4d-slider').max = String(Math.max(0, n - 1));
    this.setFrame(this.frameIndex);
  };

  /* A URL hash "#frame=K" (0-based, like the slider) shows frame K paused. */
  App.prototype.readHash = function () {
    var m = /(?:^#|&)frame=(\d+)/.exec(location.hash || '');
    if (!m) return;
    this.pinned = true;
    this.setPlaying(false);
    this.setFrame(parseInt(m[1], 10));
  };

  App.prototype.loadLocal = function (fileList) {
    var self = this;
    var files = Array.prototype.slice.call(fileList).filter(function (f) { return /\.ply$/i.test(f.name); });
    files.sort(function (a, b) { return naturalCompare(a.name, b.name); });
    if (!files.length || !this.renderer) return;
    this.frames = [];
    this.errors = [];
    this.renderer.textures = [];
    this.loaded = 0;
    this.done = false;
    this.frameIndex = 0;
    this.pinned = false;
    this.upMatrix = UP_TRANSFORMS[this.$('ss4d-up').value] || UP_TRANSFORMS.z;
    this.orderKey = null;
    this.setTotal(files.length);
    var next = function (i) { // one after the other, so each frame shows up as soon as it is parsed
      if (i >= files.length) { self.finish(); return; }
      files[i].arrayBuffer().then(function (buf) { self.addFrame(i, parsePly(buf)); })
        .catch(function (e) { self.errors[i] = files[i].name + ': ' + e.message; })
        .then(function () { self.showProgress(); next(i + 1); });
    };
    next(0);
  };

  App.prototype.bindUi = function () {
    var self = this, c = this.canvas, drag = null, pinch = null;
    var slider = this.$('ss4d-slider');
    this.$('ss4d-play').onclick = function () { self.setPlaying(!self.playing); };
    slider.oninput = function () { self.setPlaying(false); self.setFrame(parseInt(slider.value, 10)); };
    this.$('ss4d-fps').onchange = function () {
      var v = parseFloat(self.$('ss4d-fps').value);
      if (v > 0) self.fps = v;
    };
    this.$('ss4d-bg').onchange = function () { document.body.style.background = self.$('ss4d-bg').value; };
    this.$('ss4d-reset').onclick = function () { self.cam = JSON.parse(JSON.stringify(self.home)); self.dirty = true; };
    var input = this.$('ss4d-files');
    input.onchange = function () { self.loadLocal(input.files); };
    document.body.addEventListener('dragover', function (ev) { ev.preventDefault(); });
    document.body.addEventListener('drop', function (ev) { ev.preventDefault(); self.loadLocal(ev.dataTransfer.files); });
    c.addEventListener('contextmenu', function (e) { e.preventDefault(); });
    c.addEventListener('pointerdown', function (e) {
      c.setPointerCapture(e.pointerId);
      drag = { x: e.clientX, y: e.clientY, pan: e.button === 2 || e.shiftKey };
    });
    c.addEventListener('pointermove', function (e) {
      if (!drag || pinch) return;
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.x = e.clientX; drag.y = e.clientY;
      if (drag.pan) self.pan(dx, dy);
      else {
        self.cam.yaw -= dx * 0.008;
        self.cam.pitch = Math.max(-1.55, Math.min(1.55, self.cam.pitch + dy * 0.008));
      }
      self.dirty = true;
    });
    c.addEventListener('pointerup', function () { drag = null; });
    c.addEventListener('wheel', function (e) {
      e.preventDefault();
      self.cam.radius = Math.max(0.3, Math.min(20, self.cam.radius * Math.exp(e.deltaY * 0.001)));
      self.dirty = true;
    }, { passive: false });
    c.addEventListener('dblclick', function () { self.cam = JSON.parse(JSON.stringify(self.home)); self.dirty = true; });
    c.addEventListener('touchstart', function (e) {
      if (e.touches.length === 2) {
        pinch = Math.hypot(e.touches[0].clientX - e.touches[1].clientX, e.touches[0].clientY - e.touches[1].clientY);
      }
    });
    c.addEventListener('touchmove', function (e) {
      if (e.touches.length !== 2 || !pinch) return;
      e.preventDefault();
      var d = Math.hypot(e.touches[0].clientX - e.touches[1].clientX, e.touches[0].clientY - e.touches[1].clientY);
      self.cam.radius = Math.max(0.3, Math.min(20, self.cam.radius * pinch / Math.max(d, 1)));
      pinch = d;
      self.dirty = true;
    }, { passive: false });
    c.addEventListener('touchend', function (e) { if (e.touches.length < 2) pinch = null; });
    window.addEventListener('keydown', function (e) {
      var t = e.target, tag = t && t.tagName;
      // text fields and drop-downs keep their keys; a focused button is pressed by space itself
      if (tag === 'SELECT' || tag === 'TEXTAREA' || (tag === 'INPUT' && t.type !== 'range')) return;
      if (e.code === 'Space') {
        if (tag === 'BUTTON') return;
        e.preventDefault();
        self.setPlaying(!self.playing);
      } else if (e.code === 'ArrowRight' || e.code === 'ArrowLeft') {
        e.preventDefault(); // a focused slider would otherwise step as well: one key press, one frame
        self.setPlaying(false);
        self.step(e.code === 'ArrowRight' ? 1 : -1);
      }
    });
    window.addEventListener('hashchange', function () { self.readHash(); });
    window.addEventListener('resize', function () { self.dirty = true; });
  };

  App.prototype.pan = function (dx, dy) {
    var V = this.worldView(), s = this.cam.radius * Math.tan(this.fov / 2) * 2 / Math.max(this.canvas.clientHeight, 1);
    for (var k = 0; k < 3; k++) this.cam.target[k] -= (V[k] * dx + V[4 + k] * dy) * s;
  };

  App.prototype.setPlaying = function (p) {
    this.playing = p;
    this.$('ss4d-play').textContent = p ? 'Pause' : 'Play';
    this.lastTick = null;
  };

  App.prototype.setFrame = function (i) {
    var n = this.total;
    if (!n) return;
    this.frameIndex = ((i % n) + n) % n;
    var fr = this.frames[this.frameIndex], err = this.errors[this.frameIndex];
    this.$('ss4d-slider').value = String(this.frameIndex);
    this.$('ss4d-label').textContent = (this.frameIndex + 1) + ' / ' + n;
    this.$('ss4d-count').textContent = fr ? fr.count + ' Gaussians' : (err ? 'frame not readable' : 'loading...');
    this.dirty = true;
  };

  /* Move k frames (wrapping) among the frames that have arrived; stays put when no other frame is there. */
  App.prototype.step = function (k) {
    var n = this.total, dir = k < 0 ? -1 : 1, i = this.frameIndex, left = Math.abs(k);
    for (var tries = 0; left > 0 && tries < n * Math.max(1, left); tries++) {
      i = ((i + dir) % n + n) % n;
      if (this.frames[i]) { left--; if (!left) break; }
    }
    if (this.frames[i]) this.setFrame(i);
  };

  App.prototype.worldView = function () { // z-up world -> camera
    var eye = orbitEye(this.cam.yaw, this.cam.pitch, this.cam.radius, this.cam.target);
    return lookAt(eye, this.cam.target, [0, 0, 1]);
  };

  App.prototype.viewMatrix = function () { // file coordinates -> camera
    return matMul(this.worldView(), this.upMatrix);
  };

  App.prototype.start = function () {
    var self = this;
    var loop = function (now) {
      if (self.playing && self.loaded > 1) {
        if (self.lastTick == null) self.lastTick = now;
        var step = 1000 / self.fps;
        if (now - self.lastTick >= step) {
          var k = Math.floor((now - self.lastTick) / step);
          self.lastTick += k * step;
          self.step(k);
        }
      }
      self.render();
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  };

  App.prototype.render = function () {
    var c = this.canvas, dpr = window.devicePixelRatio || 1;
    var w = Math.max(1, Math.round(c.clientWidth * dpr)), h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; this.dirty = true; }
    if (!this.dirty) return;
    this.dirty = false;
    var frame = this.frames[this.frameIndex];
    var view = this.viewMatrix();
    if (frame) {
      var key = this.frameIndex + ':' + view.join(',');
      if (key !== this.orderKey) {
        this.renderer.setOrder(sortByDepth(frame.position, frame.count, view, 0.2));
        this.orderKey = key;
      }
    }
    var focal = 0.5 * h / Math.tan(this.fov / 2);
    this.renderer.draw(frame ? this.frameIndex : -1, view, focal, w, h); // clears when the frame is not there
    this.drawnFrame = frame ? this.frameIndex : -1;
  };

  root.SS4DViewer = {
    parsePly: parsePly, decodeFrame: decodeFrame, covariance: covariance, lookAt: lookAt, orbitEye: orbitEye,
    sortByDepth: sortByDepth, packFrame: packFrame, matMul: matMul, UP_TRANSFORMS: UP_TRANSFORMS, VS: VS, FS: FS,
    App: App
  };

  // the page's embedded frames call these (the viewer script comes after the page's controls, before the frames)
  root.ss4dFrame = function (i, b64) { if (root.ss4dApp && root.ss4dApp.renderer) root.ss4dApp.receive(i, b64); };
  root.ss4dFramesEnd = function () { if (root.ss4dApp && root.ss4dApp.renderer) root.ss4dApp.finish(); };

  if (typeof document !== 'undefined' && document.getElementById('ss4d-config')) {
    root.ss4dApp = new App(JSON.parse(document.getElementById('ss4d-config').textContent));
    // a truncated file never reaches ss4dFramesEnd: the load event closes the list instead
    root.addEventListener('load', function () { root.ss4dFramesEnd(); });
  }
})(typeof window !== 'undefined' ? window : globalThis);
