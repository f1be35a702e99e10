(function(){
  var cards=[].slice.call(document.querySelectorAll('article.card'));
  var lookalikes=[].slice.call(document.querySelectorAll('article.lookalike')),
      lookalikeCount=document.getElementById('lookalike-count');
  var cat=document.getElementById('category-filter'),split=document.getElementById('split-filter'),
      q=document.getElementById('search'),reveal=document.getElementById('reveal-unsafe'),
      count=document.getElementById('shown-count'),empty=document.getElementById('no-match');
  function fromHash(){
    // Filters live in the address (#category=o1_hate&split=test&q=word), so a filtered view can be shared.
    var h=new URLSearchParams(location.hash.replace(/^#/,''));
    if(h.has('category'))cat.value=h.get('category');
    if(h.has('split'))split.value=h.get('split');
    if(h.has('q'))q.value=h.get('q');
  }
  function toHash(){
    var h=new URLSearchParams();
    if(cat.value)h.set('category',cat.value);if(split.value)h.set('split',split.value);if(q.value)h.set('q',q.value);
    var s=h.toString();history.replaceState(null,'',s?'#'+s:location.pathname+location.search);
  }
  function apply(){
    var c=cat.value,s=split.value,t=q.value.trim().toLowerCase();
    function show(list){
      var n=0;
      list.forEach(function(el){
        var ok=(!c||el.dataset.category===c)&&(!s||el.dataset.split===s)&&(!t||el.dataset.search.indexOf(t)>=0);
        el.hidden=!ok;if(ok)n++;
      });
      return n;
    }
    var n=show(cards),m=show(lookalikes);
    count.textContent=n+' of '+cards.length+' pairs shown';
    if(lookalikeCount)lookalikeCount.textContent=m+' of '+lookalikes.length+' look-alikes shown';
    empty.hidden=n>0;
  }
  [cat,split].forEach(function(el){el.addEventListener('change',function(){toHash();apply();});});
  q.addEventListener('input',function(){toHash();apply();});
  window.addEventListener('hashchange',function(){fromHash();apply();});
  document.addEventListener('click',function(ev){
    var f=ev.target.closest&&ev.target.closest('.frame');
    if(!f)return;var img=f.querySelector('img.sensitive');if(img)img.classList.toggle('blur');
  });
  reveal.addEventListener('change',function(){
    document.querySelectorAll('img.sensitive').forEach(function(img){img.classList.toggle('blur',!reveal.checked);});
  });
  window.addEventListener('load',function(){
    // How many images the browser decoded (tests read it back from the DOM).
    var ok=[].filter.call(document.images,function(img){return img.complete&&img.naturalWidth>0;}).length;
    document.body.setAttribute('data-images-loaded',String(ok));
  });
  fromHash();apply();
})();
