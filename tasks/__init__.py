"""SeqIO task definitions; importing the package registers them.

Tasks: fortunes_offensive_en, fortunes_offensive_multilingual, civil_comments,
civil_comments_multilabel, plus "file_<hash>" tasks added by
`tasks.toxicity.register_file_task`. See `tasks.toxicity` for the features they yield.
"""

from tasks import toxicity  # pylint: disable=unused-import  # Registers the tasks.
