// Watching a racer's lap: the track from the answer's borders, the car moving along its
// trajectory at the simulator's rate (hz), its trail coloured by speed (blue slow, red fast).
(function () {
  "use strict";

  function speedColour(fraction) {
    const f = Math.max(0, Math.min(1, fraction));
    const r = f < 0.5 ? 0 : Math.round(510 * (f - 0.5));
    const g = f < 0.5 ? Math.round(510 * f) : Math.round(255 * (2 - 2 * f));
    const b = f < 0.5 ? Math.round(255 * (1 - 2 * f)) : 0;
    return `rgb(${r},${g},${b})`;
  }

  function frame(canvas, track) {
    const points = track.left.concat(track.right);
    const xs = points.map(p => p[0]), ys = points.map(p => p[1]);
    const x0 = Math.min(...xs), y0 = Math.min(...ys);
    const span = Math.max(Math.max(...xs) - x0, Math.max(...ys) - y0) || 1;
    const margin = 16;
    const scale = Math.min(canvas.width, canvas.height) - 2 * margin;
    // Centred: the track's own extent, scaled alike on both axes.
    const dx = (canvas.width - (Math.max(...xs) - x0) / span * scale) / 2;
    const dy = (canvas.height - (Math.max(...ys) - y0) / span * scale) / 2;
    return p => [dx + (p[0] - x0) / span * scale,
                 canvas.height - dy - (p[1] - y0) / span * scale];
  }

  function polygon(ctx, points, at) {
    ctx.beginPath();
    points.forEach((p, i) => { const [x, y] = at(p); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
    ctx.closePath();
  }

  function area(points) {
    let sum = 0;
    points.forEach((p, i) => { const q = points[(i + 1) % points.length]; sum += p[0] * q[1] - q[0] * p[1]; });
    return Math.abs(sum) / 2;
  }

  function drawTrack(ctx, canvas, track, at) {
    ctx.fillStyle = "#2a6e32";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    const [outer, inner] = area(track.left) > area(track.right)
      ? [track.left, track.right] : [track.right, track.left];
    ctx.fillStyle = "#5a5a5a"; polygon(ctx, outer, at); ctx.fill();
    ctx.fillStyle = "#2a6e32"; polygon(ctx, inner, at); ctx.fill();
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 2;
    polygon(ctx, track.left, at); ctx.stroke();
    polygon(ctx, track.right, at); ctx.stroke();
    ctx.strokeStyle = "#ffdc00"; ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.moveTo(...at(track.left[0])); ctx.lineTo(...at(track.right[0])); ctx.stroke();
  }

  // Animate `answer` (a lap request's answer) on `canvas`; `onFrame(step)` after each frame.
  // Each frame draws the track, the trail so far and the car. Returns a handle whose
  // stop() ends the animation.
  function play(canvas, answer, onFrame) {
    const ctx = canvas.getContext("2d");
    const track = answer.track, t = answer.trajectory;
    const at = frame(canvas, track);
    const top = Math.max(...t.speed, 1e-6);
    const steps = t.x.length;
    let stopped = false;
    const started = performance.now();
    function tick(now) {
      if (stopped) return;
      const shown = Math.min(steps - 1, Math.floor((now - started) / 1000 * answer.hz));
      drawTrack(ctx, canvas, track, at);
      ctx.lineWidth = 2;
      for (let k = 0; k < shown; k++) {
        ctx.strokeStyle = speedColour(t.speed[k + 1] / top);
        ctx.beginPath();
        ctx.moveTo(...at([t.x[k], t.y[k]]));
        ctx.lineTo(...at([t.x[k + 1], t.y[k + 1]]));
        ctx.stroke();
      }
      const [cx, cy] = at([t.x[shown], t.y[shown]]);
      ctx.fillStyle = "#000"; ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5;
      ctx.beginPath(); ctx.arc(cx, cy, 5, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
      if (onFrame) onFrame(shown);
      if (shown < steps - 1) requestAnimationFrame(tick);
    }
    requestAnimationFrame(tick);
    return {stop() { stopped = true; }, steps};
  }

  window.GenkilnLap = {play, speedColour};
})();
