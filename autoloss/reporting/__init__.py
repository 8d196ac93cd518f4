"""What a user reads: terminal tables and the live search display (``terminal``), the self-contained HTML report
(``html``) and its figures (``figures``)."""
