"""Inline CSS and JS of the HTML report (no external resources)."""

CSS = """
:root {
  --t0: #8ddb9b; --t1: #b5e9bd; --m0: #d3d5dc; --m1: #eceef2;
  --ink: #1d1f23; --muted: #5f6570; --line: #c9ccd3;
}
* { box-sizing: border-box }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: #fafbfc }
#nav { position: fixed; top: 0; left: 0; bottom: 0; width: 300px; overflow: auto; padding: 12px 14px;
  border-right: 1px solid var(--line); background: #fff }
#nav h2 { font-size: 14px; margin: 14px 0 6px }
#nav ul { margin: 0; padding: 0; list-style: none }
#nav li { margin: 3px 0; font-size: 12.5px }
#nav small { color: var(--muted) }
#nav a { color: #1f5fbf; text-decoration: none }
#nav a:hover { text-decoration: underline }
.src { font-family: ui-monospace, monospace }
main { margin-left: 300px; padding: 16px 28px 80px; max-width: 1300px }
h1 { font-size: 22px; margin: 4px 0 }
h2 { font-size: 18px; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 28px }
.meta { color: var(--muted); margin: 2px 0 }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px }
td, th { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top }
th { background: #f0f1f4 }
td.n { text-align: right; font-variant-numeric: tabular-nums }
tr.fail td { background: #fde2e1 }
tr.ok td:first-child::before { content: "\\2713  "; color: #2b8a3e }
tr.fail td:first-child::before { content: "\\2717  "; color: #c92a2a }
tr.info td:first-child::before { content: "\\2139  "; color: #1f5fbf }
.plots { display: flex; flex-wrap: wrap; gap: 16px }
.plots figure { margin: 0; background: #fff; border: 1px solid var(--line); padding: 4px }
svg.plot { display: block; width: 480px; height: 240px }
pre.hist { background: #fff; border: 1px solid var(--line); padding: 6px; font-size: 12px }
.legend > span { display: inline-block; margin-right: 12px }
.sw { padding: 0 6px; border-radius: 3px }
article.ex { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 14px 0 }
article.ex h3 { font-size: 14px; margin: 2px 0 8px }
.tk { font: 13px/1.9 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap;
  word-break: break-all }
.tk i { font-style: normal; border-right: 1px solid rgba(0, 0, 0, .28); border-radius: 2px; padding: 1px 0 }
.tk i.t { background: var(--t0) }
.tk i.t:nth-of-type(even) { background: var(--t1) }
.tk i.m { background: var(--m0); color: #3c4048 }
.tk i.m:nth-of-type(even) { background: var(--m1) }
.tk i.c { color: #8a8f98 }
.tk i:hover { outline: 2px solid #1f5fbf }
.rs { border-left: 3px solid var(--rc, #999); padding-left: 2px; margin-left: 1px }
.rl { font: bold 10.5px system-ui, sans-serif; color: #fff; background: var(--rc, #999); border-radius: 3px;
  padding: 1px 5px; margin-right: 3px; vertical-align: 1px; user-select: none }
.r-system { --rc: #7b4fc4 } .r-user { --rc: #1f6fd1 } .r-assistant { --rc: #2b8a3e }
.r-tool { --rc: #d9730d } .r-template { --rc: #868e96 } .r-unknown { --rc: #adb5bd }
.note { color: #a15c00; font-size: 12.5px }
#tip { position: fixed; z-index: 10; pointer-events: none; background: #1d1f23; color: #fff;
  font: 12px/1.4 ui-monospace, monospace; padding: 5px 8px; border-radius: 4px; white-space: pre;
  box-shadow: 0 2px 8px rgba(0, 0, 0, .3) }
"""

JS = """
(function(){
  var tip=document.getElementById('tip');
  function info(el){
    var id=el.getAttribute('data-id'), trained=el.classList.contains('t');
    var span=el.closest('.rs'), role=span?span.getAttribute('data-role'):'';
    var s='token id '+id+'\\nlabel  '+(trained?id+' (trained)':'-100 (masked)')+'\\nrole   '+(role||'unknown');
    return el.classList.contains('c')?s+'\\n(more bytes of the character before)':s;
  }
  document.addEventListener('mouseover',function(e){
    var el=e.target.closest?e.target.closest('.tk i'):null;
    if(!el){tip.hidden=true;return;}
    tip.textContent=info(el);tip.hidden=false;
  });
  document.addEventListener('mousemove',function(e){
    if(tip.hidden)return;
    tip.style.left=Math.min(e.clientX+14,window.innerWidth-tip.offsetWidth-4)+'px';
    tip.style.top=Math.min(e.clientY+16,window.innerHeight-tip.offsetHeight-4)+'px';
  });
})();
"""
