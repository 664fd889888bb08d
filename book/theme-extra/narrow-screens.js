// On a narrow screen, a wide table scrolls sideways inside its own box, and a figure is
// scaled down to the width of the text; neither says so by itself. This marks a table
// box that scrolls, and which sides hold more (narrow-screens.css fades those sides, and
// a "scroll →" line above the box points to them), and gives a figure scaled too small
// to read a link to the drawing at full size. Everything is measured again whenever the
// text's width changes.
(function () {
  'use strict';
  // Below this share of its own width, a figure's lettering is too small to read.
  const READABLE = 0.8;
  const updates = [];

  for (const box of document.querySelectorAll('.content .table-wrapper')) {
    const cue = document.createElement('div');
    cue.className = 'scroll-cue';
    cue.setAttribute('aria-hidden', 'true');
    cue.hidden = true;
    box.before(cue);
    const update = () => {
      const hidden = box.scrollWidth - box.clientWidth;
      const scrolls = hidden > 1;
      const left = scrolls && box.scrollLeft > 1;
      const right = scrolls && box.scrollLeft < hidden - 1;
      box.classList.toggle('more-left', left);
      box.classList.toggle('more-right', right);
      cue.textContent = `${left ? '← ' : ''}scroll${right ? ' →' : ''}`;
      cue.hidden = !scrolls;
    };
    box.addEventListener('scroll', update, { passive: true });
    updates.push(update);
  }

  // mdBook puts each image in a label that zooms it to the window, which on a phone is
  // no larger: the link goes to the file itself.
  for (const label of document.querySelectorAll('.content label.checkbox-label')) {
    const img = label.querySelector(':scope > img');
    if (!img || !/\.svg$/i.test(img.getAttribute('src') || '')) continue;
    const link = document.createElement('a');
    link.className = 'full-size';
    link.href = img.getAttribute('src');
    link.textContent = 'The figure at full size ↗';
    link.hidden = true;
    label.after(link);
    const update = () => {
      const natural = img.naturalWidth;
      link.hidden = !(natural > 0 && img.clientWidth < natural * READABLE);
    };
    img.addEventListener('load', update);
    updates.push(update);
  }

  const all = () => updates.forEach((update) => update());
  const content = document.querySelector('.content');
  if (content && 'ResizeObserver' in window) {
    new ResizeObserver(all).observe(content);
  } else {
    window.addEventListener('resize', all);
  }
  all();
})();
