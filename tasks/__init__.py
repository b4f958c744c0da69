"""SeqIO task definitions; importing the package registers them.

Classification (`tasks.toxicity`): toxic_comments_en, fortunes_offensive_en,
fortunes_offensive_multilingual, civil_comments, civil_comments_multilabel, plus "file_<hash>"
tasks added by `tasks.toxicity.register_file_task` over files that `tasks.user_files` reads.
Span-corruption pretraining (`tasks.pretraining`): span_corruption_fortunes_en, the
span_corruption_fortunes_multilingual and span_corruption_mc4 mixtures, c4 / mC4 tasks,
plus "span_corruption_files_<hash>" tasks added by `register_text_files_task`.
See those modules for the features they yield.
"""

# pylint: disable=unused-import  # Importing registers the tasks.
from tasks import pretraining
from tasks import toxicity
