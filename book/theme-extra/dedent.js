// mdBook includes an anchored region of a source file as it stands, so a method taken
// out of an `impl` block keeps the four spaces of indentation it has in the file. This
// removes, from every code block, the indentation that all of its lines share, once the
// page has been highlighted. It walks the text nodes, because highlighting has split
// the code into spans; indentation always sits at the start of a line.
(function () {
  'use strict';
  for (const code of document.querySelectorAll('pre > code')) {
    const lines = code.textContent.split('\n').filter((line) => line.trim() !== '');
    const common = Math.min(...lines.map((line) => line.match(/^ */)[0].length));
    if (!Number.isFinite(common) || common === 0) continue;
    const walker = document.createTreeWalker(code, NodeFilter.SHOW_TEXT);
    let strip = common; // spaces still to remove at the start of the current line
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      let kept = '';
      for (const ch of node.data) {
        if (ch === '\n') {
          strip = common;
          kept += ch;
        } else if (ch === ' ' && strip > 0) {
          strip -= 1;
        } else {
          strip = 0;
          kept += ch;
        }
      }
      node.data = kept;
    }
  }
})();
